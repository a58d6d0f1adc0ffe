"""The history checker itself: each violation is counted, a clean history is 0/0/0."""

from __future__ import annotations

from .history import Claim, CommittedTurn, Request, check


def test_a_clean_history_counts_nothing() -> None:
    report = check(
        [Request("a", True), Request("b", False, failed=True), Request("c", False)],
        [CommittedTurn("a", 0, 1), CommittedTurn("c", 2, 2)],
        [Claim(2, 2)],
    )
    assert report.counts == (0, 0, 0) and report.ok, report.details


def test_an_acknowledged_request_with_no_commit_is_lost() -> None:
    report = check([Request("a", True), Request("b", True)], [CommittedTurn("b", 0)])
    assert report.counts == (1, 0, 0) and not report.ok
    assert report.details == ["a: acknowledged, not committed"]


def test_each_extra_commit_of_a_request_counts() -> None:
    turns = [CommittedTurn("a", 0), CommittedTurn("a", 2), CommittedTurn("a", 4)]
    assert check([Request("a", True)], turns).counts == (0, 2, 0)


def test_a_commit_older_than_an_earlier_commits_epoch_is_stale() -> None:
    turns = [CommittedTurn("a", 0, 1), CommittedTurn("b", 2, 2), CommittedTurn("c", 4, 1)]
    assert check([], turns).counts == (0, 0, 1)


def test_a_commit_after_a_newer_claim_is_stale_even_before_the_new_owner_commits() -> None:
    turns = [CommittedTurn("a", 0, 1), CommittedTurn("b", 2, 1)]
    assert check([], turns, [Claim(2, 2)]).stale_epoch == 1
    assert check([], turns, [Claim(2, 4)]).stale_epoch == 0


def test_a_failed_request_found_committed_and_a_wrong_reply_are_counted() -> None:
    report = check(
        [Request("a", False, failed=True), Request("b", True, reply="x")],
        [CommittedTurn("a", 0), CommittedTurn("b", 2, reply="y")],
    )
    assert report.failed_but_committed == 1 and report.wrong_reply == 1
    assert report.counts == (0, 0, 0) and not report.ok
