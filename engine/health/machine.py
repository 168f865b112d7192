"""When a checker reports up or down, and when it checks next: keepalived's epilogs.

Each machine takes one check outcome and the checker's current up/down state and
returns (``report``, ``delay``): ``report`` is True/False when keepalived would call
update_svr_checker_state(UP/DOWN) (None: nothing to report yet), ``delay`` the
seconds until the next check.  No I/O, no clock: checkerd.py drives them, tests
feed them outcomes.

  * ``RetryMachine``: tcp_epilog() (TCP_CHECK; UDP_CHECK, DNS_CHECK and PING_CHECK
    share it): an up checker is declared down only after ``retry`` retries, each
    ``delay_before_retry`` apart, all failed; a success brings it up at once.
  * ``MiscMachine``: misc_check_child_thread(): the same counting, the next run
    scheduled from the start of the last one (``from_start``).
  * ``UrlMachine``: http_check.c epilog(): one url per check, every url must pass;
    a failing url is retried ``retry`` times; a down checker needs the failed url
    to pass and then a full pass over all urls (``delay_loop`` apart, or at once
    with ``fast_recovery``).

Before its first check a checker counts as having used its retries already
(check_check_config() sets retry_it = retry): one failure is enough at start.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class RetryMachine:
    retry: int
    delay_loop: float
    delay_before_retry: float
    retry_it: int = -1
    has_run: bool = False
    from_start = False

    def __post_init__(self) -> None:
        if self.retry_it < 0:
            self.retry_it = self.retry

    def url(self) -> int:
        return 0

    def step(self, ok: bool, is_up: bool) -> tuple[bool | None, float]:
        report = None
        delay = self.delay_loop
        if ok or ((is_up or not self.has_run) and self.retry_it >= self.retry):
            self.retry_it = 0
            if ok and (not is_up or not self.has_run):
                report = True
            elif not ok and (is_up or not self.has_run):
                report = False
        elif is_up:
            delay = self.delay_before_retry
            self.retry_it += 1
        self.has_run = True
        return report, delay

    def migrate(self, old: RetryMachine, is_up: bool) -> None:
        """migrate_checkers(): keep what a reload must not lose."""
        self.has_run = old.has_run
        if not is_up:
            self.retry_it = self.retry + 1
        else:
            self.retry_it = min(old.retry_it, self.retry)


@dataclass
class MiscMachine(RetryMachine):
    from_start = True

    def step(self, ok: bool, is_up: bool) -> tuple[bool | None, float]:
        report = None
        if ok:
            if not is_up or not self.has_run:
                report = True
            self.retry_it = 0
        elif is_up or not self.has_run:
            if self.retry_it < self.retry:
                self.retry_it += 1
            else:
                self.retry_it = 0
                report = False
        self.has_run = True
        return report, self.delay_before_retry if self.retry_it else self.delay_loop


@dataclass
class UrlMachine(RetryMachine):
    urls: int = 1
    fast_recovery: bool = False
    url_it: int = 0
    failed_url: int | None = None

    def url(self) -> int:
        return self.url_it

    def step(self, ok: bool, is_up: bool) -> tuple[bool | None, float]:
        report = None
        if ok:
            method = "new"
        else:
            method = "retry" if (is_up or not self.has_run) else "failed"
            if method == "retry":
                self.has_run = True
        url_done = False
        if method == "new":
            self.url_it += 1
            url_done = self.url_it >= self.urls
            self.retry_it = 0
        elif method == "retry":
            self.retry_it += 1
        if method == "new" and url_done and self.failed_url is None:
            if not is_up or not self.has_run:
                report = True
                self.has_run = True
            self.url_it, self.retry_it = 0, 0
        elif method == "retry" and self.retry_it > self.retry:
            if is_up or not self.has_run:
                report = False
            self.failed_url = self.url_it
        elif method == "new" and self.failed_url is not None:
            self.failed_url, self.url_it, self.retry_it = None, 0, 0
        if method == "new":
            delay = self.delay_loop
            if not self.has_run:
                self.retry_it = self.retry
        elif self.failed_url is not None:
            delay = max(self.delay_before_retry, self.delay_loop)
        else:
            delay = self.delay_before_retry
        up_now = is_up if report is None else report
        if self.fast_recovery and (not self.has_run or (not up_now and self.failed_url is None)):
            delay = 0.0
        return report, delay

    def migrate(self, old: RetryMachine, is_up: bool) -> None:
        super().migrate(old, is_up)
        if isinstance(old, UrlMachine) and old.urls == self.urls:
            self.url_it, self.failed_url = old.url_it, old.failed_url


def machine_for(kind: str, retry: int, delay_loop: float, delay_before_retry: float,
                urls: int = 1, fast_recovery: bool = False) -> RetryMachine:
    if kind in ("HTTP_GET", "SSL_GET"):
        return UrlMachine(retry, delay_loop, delay_before_retry, urls=urls,
                          fast_recovery=fast_recovery)
    if kind == "MISC_CHECK":
        return MiscMachine(retry, delay_loop, delay_before_retry)
    return RetryMachine(retry, delay_loop, delay_before_retry)
