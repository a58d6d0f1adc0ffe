from __future__ import annotations

import netsuke.store as store_package


def test_all_lists_exactly_the_public_names() -> None:
    public = {
        name
        for name, value in vars(store_package).items()
        if not name.startswith("_") and getattr(value, "__module__", "").startswith("netsuke.store")
    }
    public |= {
        "AuditValues",
        "CAPABLE_ONLY",
        "DEFAULT_URL",
        "DeliveryStatus",
        "ENV_URL",
        "KNOWN_PROVIDERS",
        "MAX_JSON_DEPTH",
        "REQUEST_KEY_MAX",
        "ExecutionKind",
        "ExecutionStatus",
        "Role",
        "RunStatus",
        "StepStatus",
        "TaskStatus",
    }
    assert set(store_package.__all__) == public
    assert all(hasattr(store_package, name) for name in store_package.__all__)


def test_every_exported_error_derives_from_store_error() -> None:
    errors = [getattr(store_package, n) for n in store_package.__all__ if n.endswith("Error")]
    assert errors
    assert all(issubclass(e, store_package.StoreError) for e in errors)
