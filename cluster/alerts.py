"""Alerts: trading events pushed to people (Telegram, Slack, Discord, a generic JSON webhook).

Plain Python (no Ray), so the execution actor, the live loop and the CLI all use the same hub:

    hub = alerts_from_settings(settings.alerts)     # None when no notifier is configured
    hub.notify(order_alert(run_id, order))          # returns at once, never raises, never blocks
    ...
    hub.close()                                     # sends what is queued, within a deadline

Rules, each one there so that alerting can never hurt trading:
* `notify()` only formats the event and puts it on each notifier's bounded queue (put_nowait);
  sending happens on one worker thread per notifier with a connect/read timeout. A receiver that
  hangs or answers 500 costs the caller nothing: its queue fills and further events are dropped
  with a count (`stats()`), which the next message that does go out reports.
* Each notifier has a token bucket (`burst` messages, refilled at `rate_per_min`). Events over
  the rate are not queued: they are counted per kind and coalesced into one summary message
  ("9 alert(s) over the rate limit not sent (1 fill, 8 order)"), sent as soon as a token is free. Trading-state changes
  and the daily P&L are never rate limited (rare, and the ones nobody may miss).
* Bot tokens and webhook URLs are secrets: they come only from environment variables (see
  cluster/settings.py `alerts:`), never appear in a repr, a log line or a recorded error (every
  error text is redacted before it is stored or logged), and are registered with
  broker/kis/redact.py so urllib3's request logging masks them too.
* Best effort, no retries: a send that fails (refused, 4xx/5xx, Telegram's 429, timeout) is
  counted in `stats()` with its redacted error and logged; the journal stays the record.
"""
from __future__ import annotations

import datetime as dt
import enum
import logging
import queue
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import requests

from broker.kis.config import mask
from broker.kis.ratelimit import TokenBucket  # the project's one token bucket
from broker.kis.redact import protect
from market.calendar import SEOUL

if TYPE_CHECKING:
    from cluster.settings import AlertsSettings

log = logging.getLogger(__name__)

SOURCE = "kis-ray-trader"


class AlertKind(str, enum.Enum):
    ORDER = "order"
    FILL = "fill"
    DENIAL = "denial"
    TRADING_STATE = "trading_state"
    FEED_STALL = "feed_stall"
    DAILY_PNL = "daily_pnl"
    INTRADAY_RISK = "intraday_risk"   # an intraday rule fired on live marks (actors/session_watch.py)
    SUMMARY = "summary"    # "N alerts not sent": goes out whenever something was coalesced or dropped


# Rare by nature (once per state change, once a day) and the ones a person must not miss: they
# skip the token bucket (never coalesced away behind a burst of fills), still through the queue.
UNTHROTTLED = frozenset({AlertKind.TRADING_STATE, AlertKind.DAILY_PNL, AlertKind.INTRADAY_RISK})


@dataclass(frozen=True)
class Alert:
    """One event. `text` is what a person reads; `data` is the machine-readable part (the generic
    webhook sends it as JSON). Values in `data` are JSON-friendly (str, int, float, bool, None)."""
    kind: AlertKind
    text: str
    data: dict[str, Any] = field(default_factory=dict)
    time: dt.datetime = field(default_factory=lambda: dt.datetime.now(SEOUL))


# --- events --------------------------------------------------------------------------------------
def _won(x: float) -> str:
    return f"{round(x):,}"


def _side(side: Any) -> str:
    return str(getattr(side, "value", side))


def order_alert(run_id: str, client_order_id: str, symbol: str, side: Any, qty: int,
                limit_price: int | None = None, broker_order_id: str = "") -> Alert:
    """An order sent to the broker (market order when `limit_price` is None)."""
    px = f"limit {_won(limit_price)} KRW" if limit_price else "market"
    return Alert(AlertKind.ORDER, f"ORDER {_side(side)} {symbol} {qty} sh, {px} ({client_order_id})",
                 {"run_id": run_id, "client_order_id": client_order_id, "broker_order_id": broker_order_id,
                  "symbol": symbol, "side": _side(side), "qty": int(qty), "limit_price": limit_price})


def fill_alert(run_id: str, fill: Any) -> Alert:
    """A broker.base.Fill (or anything with its fields)."""
    value = fill.qty * fill.price
    return Alert(AlertKind.FILL,
                 f"FILL {_side(fill.side)} {fill.symbol} {fill.qty} sh @ {_won(fill.price)} KRW = {_won(value)} KRW "
                 f"(fees {_won(fill.commission + fill.tax)})",
                 {"run_id": run_id, "client_order_id": fill.client_order_id, "broker_order_id": fill.broker_order_id,
                  "fill_id": getattr(fill, "fill_id", ""), "symbol": fill.symbol, "side": _side(fill.side),
                  "qty": int(fill.qty), "price": int(fill.price), "commission": int(fill.commission),
                  "tax": int(fill.tax), "filled_at": fill.filled_at.isoformat()})


def denial_alert(run_id: str, symbol: str, side: Any, qty: int, reason: str) -> Alert:
    """An order the risk engine refused (journaled with the same reason)."""
    return Alert(AlertKind.DENIAL, f"DENIED {_side(side)} {symbol} {qty} sh: {reason}",
                 {"run_id": run_id, "symbol": symbol, "side": _side(side), "qty": int(qty), "reason": reason})


def trading_state_alert(run_id: str, old: Any, new: Any, reason: str = "") -> Alert:
    """ACTIVE / REDUCING / HALTED changes (strategies/risk.py TradingState)."""
    o, n = _side(old), _side(new)
    return Alert(AlertKind.TRADING_STATE, f"TRADING STATE {o} -> {n}" + (f": {reason}" if reason else ""),
                 {"run_id": run_id, "old": o, "new": n, "reason": reason})


def feed_stall_alert(symbol: str | None, silent_s: float | None, feed: str = "websocket") -> Alert:
    """No market data for `silent_s` seconds (symbol None: the whole feed; silent_s None:
    nothing ever received)."""
    what = f"{feed} {symbol}" if symbol else feed
    how = f"nothing for {silent_s:.0f} s" if silent_s is not None else "no data received yet"
    return Alert(AlertKind.FEED_STALL, f"FEED STALL {what}: {how}",
                 {"feed": feed, "symbol": symbol, "silent_s": None if silent_s is None else round(float(silent_s), 3)})


def report_feed_stalls(quotes: Any, symbols: Iterable[str], max_silence_s: float, hub: AlertHub | None) -> dict:
    """Call on a timer: each symbol that newly went silent (broker/kis/realtime.py
    RealtimeQuotes.new_stalls) becomes one feed_stall alert. Returns {symbol: seconds silent}."""
    stalls = quotes.new_stalls(symbols, max_silence_s)
    if hub is not None:
        for symbol, silent in stalls.items():
            hub.notify(feed_stall_alert(symbol, silent))
    return stalls


def intraday_risk_alert(run_id: str, rule: str, symbol: str | None, action: str, reason: str) -> Alert:
    """An intraday rule fired (broker/risk_engine.py IntradayRule): a stop sell or a state change."""
    what = f"{symbol} {action}" if symbol else action
    return Alert(AlertKind.INTRADAY_RISK, f"INTRADAY RISK {rule}: {what}: {reason}",
                 {"run_id": run_id, "rule": rule, "symbol": symbol, "action": action, "reason": reason})


def daily_pnl_alert(run_id: str, day: dt.date, equity: int, pnl: int, fills: int = 0, denials: int = 0,
                    benchmark_return: float | None = None) -> Alert:
    """The end-of-day summary: equity and the day's P&L in KRW."""
    base = equity - pnl
    pct = pnl / base * 100 if base else 0.0
    bench = f", benchmark {benchmark_return * 100:+.2f}%" if benchmark_return is not None else ""
    return Alert(AlertKind.DAILY_PNL,
                 f"DAILY P&L {day.isoformat()}: {pnl:+,} KRW ({pct:+.2f}%), equity {_won(equity)} KRW, "
                 f"{fills} fills, {denials} denials{bench}",
                 {"run_id": run_id, "day": day.isoformat(), "equity": int(equity), "pnl": int(pnl),
                  "pnl_pct": round(pct, 4), "fills": int(fills), "denials": int(denials),
                  "benchmark_return": benchmark_return})


# --- notifiers -----------------------------------------------------------------------------------
class AlertSendError(RuntimeError):
    """A receiver refused or could not be reached; the message is already redacted."""


class Notifier:
    """One destination. Subclasses say where (`_url`) and what (`_payload`); the base class owns
    the redaction and the HTTP call (timeouts, status check)."""
    kind = "notifier"

    def __init__(self, secrets: Iterable[str], timeout_s: float = 5.0, name: str = ""):
        self._secrets = sorted({s for s in secrets if s}, key=len, reverse=True)
        self.timeout_s = timeout_s
        self.name = name or self.kind
        self._session = requests.Session()
        self._session.trust_env = False   # no proxy picked up from the environment for a private URL
        protect(*self._secrets)            # urllib3/requests debug logs mask them too

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r})"

    def redact(self, text: str) -> str:
        for s in self._secrets:
            text = text.replace(s, mask(s))
        return text

    def _url(self) -> str:
        raise NotImplementedError

    def _payload(self, alert: Alert) -> dict:
        raise NotImplementedError

    def send(self, alert: Alert) -> None:
        try:
            resp = self._session.post(self._url(), json=self._payload(alert), timeout=self.timeout_s)
        except requests.RequestException as exc:
            raise AlertSendError(self.redact(f"{self.name}: {type(exc).__name__}: {exc}")) from None
        if resp.status_code >= 300:
            raise AlertSendError(self.redact(f"{self.name}: HTTP {resp.status_code} {resp.text[:200]}"))


def _url_secrets(url: str) -> list[str]:
    """A webhook URL is a credential: the whole of it, and its path (what urllib3 logs)."""
    parts = urlsplit(url)
    path = parts.path + (f"?{parts.query}" if parts.query else "")
    return [url, path] if len(path) > 1 else [url]


class TelegramNotifier(Notifier):
    """Bot API sendMessage: POST {api_url}/bot<token>/sendMessage {chat_id, text}. Plain text (no
    parse_mode), so symbols and reasons never need Markdown escaping; 4096 characters at most."""
    kind = "telegram"

    def __init__(self, bot_token: str, chat_id: str, api_url: str = "https://api.telegram.org", **kw):
        if not bot_token or not chat_id:
            raise ValueError("telegram notifier needs a bot token and a chat_id")
        super().__init__([bot_token, f"bot{bot_token}"], **kw)
        self._token, self.chat_id, self.api_url = bot_token, str(chat_id), api_url.rstrip("/")

    def _url(self) -> str:
        return f"{self.api_url}/bot{self._token}/sendMessage"

    def _payload(self, alert: Alert) -> dict:
        return {"chat_id": self.chat_id, "text": alert.text[:4096], "disable_web_page_preview": True}


class SlackNotifier(Notifier):
    """A Slack (or Mattermost/Rocket.Chat) incoming webhook: POST {"text": ...}."""
    kind = "slack"

    def __init__(self, webhook_url: str, **kw):
        if not webhook_url:
            raise ValueError(f"{self.kind} notifier needs a webhook URL")
        super().__init__(_url_secrets(webhook_url), **kw)
        self._webhook = webhook_url

    def _url(self) -> str:
        return self._webhook

    def _payload(self, alert: Alert) -> dict:
        return {"text": alert.text}


class DiscordNotifier(SlackNotifier):
    """A Discord webhook: POST {"content": ...} (2000 characters at most)."""
    kind = "discord"

    def _payload(self, alert: Alert) -> dict:
        return {"content": alert.text[:2000]}


class WebhookNotifier(SlackNotifier):
    """A generic JSON webhook: the whole event, for a receiver that routes by kind."""
    kind = "webhook"

    def _payload(self, alert: Alert) -> dict:
        return alert_payload(alert)


# --- the hub -------------------------------------------------------------------------------------
@dataclass
class NotifierStats:
    queued: int = 0
    sent: int = 0
    failed: int = 0
    dropped_queue_full: int = 0                                    # receiver too slow: queue was full
    rate_limited: Counter = field(default_factory=Counter)         # kind → events coalesced, all time
    last_error: str = ""                                           # redacted


class _Channel:
    """A notifier with its queue, bucket and worker thread."""

    def __init__(self, notifier: Notifier, kinds: set[AlertKind], bucket: TokenBucket, queue_size: int,
                 idle_poll_s: float):
        self.notifier, self.kinds, self.bucket = notifier, kinds, bucket
        self.queue: queue.Queue[Alert | None] = queue.Queue(maxsize=queue_size)
        self.stats = NotifierStats()
        self.idle_poll_s = idle_poll_s
        self._pending: Counter = Counter()      # coalesced since the last message that went out
        self._lost = 0                           # dropped (queue full) since the last message
        self._lock = threading.Lock()
        self.thread = threading.Thread(target=self._work, name=f"alerts-{notifier.name}", daemon=True)
        self.thread.start()

    def offer(self, alert: Alert) -> None:
        if alert.kind not in self.kinds:
            return
        if alert.kind not in UNTHROTTLED and not self.bucket.try_acquire():
            with self._lock:
                self._pending[alert.kind.value] += 1
                self.stats.rate_limited[alert.kind.value] += 1
            return
        with self._lock:     # several trading threads may notify at once
            try:
                self.queue.put_nowait(alert)
                self.stats.queued += 1
            except queue.Full:
                self._lost += 1
                self.stats.dropped_queue_full += 1

    def _summary(self) -> str:
        with self._lock:
            pending, lost = self._pending, self._lost
            self._pending, self._lost = Counter(), 0
        parts = []
        if pending:
            parts.append(f"{sum(pending.values())} alert(s) over the rate limit not sent ("
                         + ", ".join(f"{n} {k}" for k, n in sorted(pending.items())) + ")")
        if lost:
            parts.append(f"{lost} alert(s) dropped: the receiver was too slow")
        return "; ".join(parts)

    def _has_backlog(self) -> bool:
        with self._lock:
            return bool(self._pending or self._lost)

    def _work(self) -> None:
        while True:
            try:
                alert = self.queue.get(timeout=self.idle_poll_s)
            except queue.Empty:
                alert = None
            else:
                if alert is None:
                    return
                self._deliver(alert)
            # what was coalesced or dropped goes out as its own line once the bucket has a token
            if self._has_backlog() and self.bucket.try_acquire():
                summary = self._summary()
                self._deliver(Alert(AlertKind.SUMMARY, f"[{SOURCE}] {summary}", {"suppressed": summary}))

    def _deliver(self, alert: Alert) -> None:
        try:
            self.notifier.send(alert)
            self.stats.sent += 1
        except Exception as exc:  # noqa: BLE001 - whatever a receiver does must not end the worker
            msg = self.notifier.redact(str(exc))
            self.stats.failed += 1
            self.stats.last_error = msg
            log.warning("alert not delivered: %s", msg)


class AlertHub:
    """Fan one event out to every notifier; see the module docstring for the guarantees."""

    def __init__(self, notifiers: Iterable[Notifier], kinds: Iterable[AlertKind | str] | None = None,
                 rate_per_min: float = 20.0, burst: int = 5, queue_size: int = 100, idle_poll_s: float = 0.5,
                 clock: Callable[[], float] = time.monotonic):
        wanted = ({AlertKind(k) for k in kinds} if kinds is not None else set(AlertKind)) | {AlertKind.SUMMARY}
        if queue_size < 1:
            raise ValueError(f"queue_size must be >= 1, got {queue_size}")
        self._channels = [_Channel(n, wanted, TokenBucket(rate_per_min / 60.0, burst, clock), queue_size, idle_poll_s)
                          for n in notifiers]
        self._closed = False

    def __repr__(self) -> str:
        return f"AlertHub({[c.notifier for c in self._channels]})"

    def notify(self, alert: Alert) -> None:
        """Hand the event to every notifier; returns at once and never raises."""
        if self._closed:
            return
        for ch in self._channels:
            try:
                ch.offer(alert)
            except Exception as exc:  # noqa: BLE001 - notify() promises never to raise into trading
                log.warning("alert not queued for %s: %s", ch.notifier.name, ch.notifier.redact(str(exc)))

    def stats(self) -> dict[str, dict[str, Any]]:
        return {ch.notifier.name: {"queued": ch.stats.queued, "sent": ch.stats.sent, "failed": ch.stats.failed,
                                   "dropped_queue_full": ch.stats.dropped_queue_full,
                                   "rate_limited": dict(ch.stats.rate_limited), "last_error": ch.stats.last_error}
                for ch in self._channels}

    def close(self, timeout_s: float = 5.0) -> None:
        """Stop taking events; let each worker send what is queued until `timeout_s` has passed.
        Workers are daemon threads, so one stuck on a hung receiver never keeps the process alive."""
        self._closed = True
        end = time.monotonic() + timeout_s
        for ch in self._channels:
            try:
                ch.queue.put(None, timeout=max(0.0, end - time.monotonic()))
            except queue.Full:
                continue
        for ch in self._channels:
            ch.thread.join(max(0.0, end - time.monotonic()))


def make_notifier(kind: str, secret: str, chat_id: str = "", api_url: str = "", timeout_s: float = 5.0,
                  name: str = "") -> Notifier:
    """`secret`: the bot token (telegram) or the webhook URL (slack, discord, webhook)."""
    if kind == "telegram":
        return TelegramNotifier(secret, chat_id, api_url or "https://api.telegram.org", timeout_s=timeout_s, name=name)
    classes = {"slack": SlackNotifier, "discord": DiscordNotifier, "webhook": WebhookNotifier}
    if kind not in classes:
        raise ValueError(f"unknown notifier kind {kind!r}: choose telegram, slack, discord or webhook")
    return classes[kind](secret, timeout_s=timeout_s, name=name)


def alerts_from_settings(alerts: AlertsSettings) -> AlertHub | None:
    """An AlertHub from `Settings.alerts` (cluster/settings.py), or None when alerts are off or no
    notifier has its secret set (a missing secret is named in the log, never the value)."""
    if not alerts.enabled:
        return None
    notifiers: list[Notifier] = []
    for n in alerts.notifiers:
        if n.secret is None:
            log.warning("alert notifier %s skipped: environment variable %s is not set", n.label, n.secret_env)
            continue
        notifiers.append(make_notifier(n.kind, n.secret.get_secret_value(), n.chat_id or "", n.api_url or "",
                                       alerts.timeout_s, n.label))
    if not notifiers:
        return None
    return AlertHub(notifiers, alerts.events, alerts.rate_per_min, alerts.burst, alerts.queue_size)



def alert_payload(alert: Alert) -> dict[str, Any]:
    """The event as JSON (what the generic webhook receives; also fit for a journal line)."""
    return {"source": SOURCE, "kind": alert.kind.value, "time": alert.time.isoformat(), "text": alert.text,
            "data": alert.data}
