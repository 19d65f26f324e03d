"""SimVenue: the Venue protocol through the real KIS client against the local KIS-protocol server.

`advance(day, bars)` asks the simulator (over its admin endpoint) to trade that bar, then reads
the resulting fills back through KisBroker (inquire-daily-ccld over REST). The simulator's
order book is the PaperBroker under market/accounting, so on the same bars and orders this venue
gives exactly the fills, cash and positions of PaperVenue (tests/integration/test_kis_venue.py).
"""
from __future__ import annotations

import datetime as dt
import shutil
import tempfile
from pathlib import Path

from broker.base import Fill
from broker.kis.auth import TokenCache
from broker.kis.broker import KisBroker
from broker.kis.config import Credentials
from broker.kis.rest import KisRest
from broker.sim.exchange import SimConfig
from broker.sim.server import SimServer
from market.accounting import CostModel
from market.calendar import TradingCalendar

Bars = dict[str, tuple[float, float, float, float]]


class SimVenue:
    def __init__(self, cash: int, costs: CostModel = CostModel(), calendar: TradingCalendar | None = None,
                 workdir: Path | str | None = None, history=None, rate_per_s: float = 200.0, burst: int = 20,
                 token_throttle_s: float = 1.0, **options):
        """`workdir` holds the token cache and the order-id map (a temporary folder by default).
        `history`: a long bar frame the server already knows (quotes, `data fetch`).
        The venue runs the simulator faster than KIS's own limits (rate, burst, token window), so
        that tests and demos are quick; other `options` go to SimConfig (page sizes, ping timing ...)."""
        if not isinstance(cash, int) or cash < 0:
            raise ValueError(f"starting cash must be a non-negative whole number of KRW, got {cash!r}")
        self._own_dir = workdir is None
        self.workdir = Path(workdir or tempfile.mkdtemp(prefix="kis-sim-"))
        config = SimConfig(costs=costs, calendar=calendar, rate_per_s=rate_per_s, burst=burst,
                           token_throttle_s=token_throttle_s, **options)
        self.server = SimServer(config, history=history).start()
        try:
            creds = self.server.add_account(cash)        # dummy credentials generated for this run
            self.credentials = Credentials(creds["KIS_APP_KEY"], creds["KIS_APP_SECRET"], creds["KIS_ACCOUNT"],
                                           creds["KIS_HTS_ID"])
            self.env = self.server.environment()
            self.rest = KisRest(self.env, self.credentials,
                                TokenCache(self.env, self.credentials, cache_dir=self.workdir))
            self._day: dt.date | None = self.server.exchange.today
            self.broker = KisBroker(self.rest, costs, calendar, id_map=self.workdir / "kis-orders.sqlite",
                                    clock=self._clock)
        except Exception:
            self.close()
            raise

    def __repr__(self) -> str:
        return f"SimVenue(server={self.server!r})"

    def _clock(self) -> dt.date:
        return self._day or dt.date.today()

    def advance(self, day: dt.date, bars: Bars) -> list[Fill]:
        payload = {"day": day.isoformat(),
                   "bars": {s: [None if v is None or v != v else float(v) for v in b] for s, b in bars.items()}}
        resp = self.rest.session.post(self.server.rest_url + "/admin/advance", json=payload, timeout=30,
                                      headers={"x-sim-admin": self.server.admin_secret})
        if resp.status_code != 200:
            raise RuntimeError(f"simulator refused bar {day}: {resp.text[:200]}")
        self._day = day
        return self.broker.sync()

    def close(self) -> None:
        if getattr(self, "server", None) is not None:
            self.server.stop()
        if getattr(self.broker if hasattr(self, "broker") else None, "ids", None) is not None:
            self.broker.ids.close()
        if self._own_dir:
            shutil.rmtree(self.workdir, ignore_errors=True)
