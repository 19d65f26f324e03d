"""One /v1/decide request, from a validated body to an answer: the Serve adapter over the core.

`DecisionService.decide` (plain async code; Ray enters only through the callables it is given):
1. who: the request's `run_id` must be the run its bearer token is for (serving/auth.py); the
   service secret alone gets a stateless decision (nothing read or stored: it moves no book);
2. the run's `DecisionState` from the store (serving/state.py), keyed by run id — never the
   replica's memory, so a restarted replica, a redeployed app or a second replica continue it;
3. a repeat of the last bar answered gets the stored answer (a loop retrying after a lost reply
   is not scored twice); a bar that does not continue the run (earlier date, other universe) is
   a 409, never a silent reset of a HALTED book;
4. the bars: the request's own snapshot, or — for a request by reference (`universe`) — the window
   up to `as_of` read from the market state held in Ray (`resolve`; it refuses a bar that has
   not happened);
5. `DecisionPipeline.due` → ask the members (`ask_members`) → `combine` → `size` (the Risk
   deployment) → `finish`; or `hold` between decisions;
6. the new state and answer are written with a compare-and-set on the version (a concurrent
   request for the same run gets a 409 instead of a lost update).
"""
from __future__ import annotations

import datetime as dt
from typing import Any, Awaitable, Callable

import numpy as np

from market.data import DataError, Panel
from serving.http import ServiceError
from serving.schema import AgentDecision, DecideRequest, DecideResponse
from strategies.pipeline import Account, Decision, DecisionPipeline, DecisionState, Snapshot, StateConflict

# the members' input (a window, or what `resolve` gave for it) → {member: {"targets"} | {"abstained"}}
AskMembers = Callable[[Any], Awaitable[dict[str, dict]]]
# market state name, as_of, universe → (the window a decision at as_of sees, the members' input
# for it: the window itself or a reference to it); raises UnknownMarket, or DataError for a
# universe or day the market state does not hold (or has not seen yet)
Resolve = Callable[[str, dt.date, tuple[str, ...]], Awaitable[tuple[Panel, Any]]]
Size = Callable[[Snapshot, Account | None, np.ndarray, DecisionState], Awaitable[tuple]]


class UnknownMarket(LookupError):
    """No market state of that name is running."""


class DecisionService:
    def __init__(self, pipeline: DecisionPipeline, members: list[str], ask_members: AskMembers, size: Size,
                 store_get: Callable[[str], Awaitable[dict | None]],
                 store_put: Callable[[str, int, dict, dict], Awaitable[int]], resolve: Resolve | None = None):
        self.pipeline, self.members = pipeline, list(members)
        self.resolve = resolve
        self.ask_members, self.size = ask_members, size
        self.store_get, self.store_put = store_get, store_put

    async def decide(self, request: DecideRequest, who: str | None) -> DecideResponse:
        run_id = request.run_id
        if run_id is None and who is not None:
            run_id = who  # a run token speaks for its run
        if run_id is not None and who != run_id:
            raise ServiceError(403, "run_id: this token may not act for that run (a run's decisions need "
                                    "that run's own token)", field="run_id")
        symbols = tuple(request.bars.symbols if request.bars is not None else request.universe or ())
        account = (Account(request.portfolio.cash, dict(request.portfolio.positions))
                   if request.portfolio is not None else None)

        version, state = 0, self.pipeline.start(symbols)
        if run_id is not None:
            record = await self.store_get(run_id)
            if record is not None:
                version, state = record["version"], DecisionState.from_dict(record["state"])
                if state.seen == request.as_of.isoformat() and tuple(state.symbols) == symbols:
                    return DecideResponse.model_validate(record["answer"])  # the same bar again
        window, members_input = await self._window(request, symbols)
        snap = Snapshot.from_panel(window)
        try:
            self.pipeline.check(snap, state)
            if self.pipeline.due(snap, state):
                decision, state = await self._decide(snap, account, state, members_input)
            else:
                decision, state = self.pipeline.hold(snap, account, state)
        except StateConflict as exc:
            raise ServiceError(409, f"run {run_id}: {exc}", field="as_of") from None
        response = self._response(decision, run_id)
        if run_id is not None:
            try:
                await self.store_put(run_id, version, state.to_dict(), response.model_dump(mode="json"))
            except StateConflict as exc:
                raise ServiceError(409, str(exc), field="run_id") from None
        return response

    async def _window(self, request: DecideRequest, symbols: tuple[str, ...]) -> tuple[Panel, Any]:
        if request.bars is not None:
            window = Panel.from_dict(request.bars.model_dump(mode="json"))
            return window, window
        market = request.market
        if self.resolve is None or market is None:
            raise ServiceError(422, "universe: this service holds no market state; send the bars", field="universe")
        try:
            window, members_input = await self.resolve(market, request.as_of, symbols)
        except UnknownMarket as exc:
            raise ServiceError(422, f"market: {exc}", field="market") from None
        except DataError as exc:
            raise ServiceError(422, f"universe: {exc}", field="universe") from None
        if window.symbols != symbols or window.date(len(window) - 1) != request.as_of:
            raise ServiceError(422, f"market: {market} gave bars for another universe or day", field="market")
        return window, members_input

    async def _decide(self, snap: Snapshot, account: Account | None, state: DecisionState, members_input: Any
                      ) -> tuple[Decision, DecisionState]:
        answers = await self.ask_members(members_input)
        decided = {n: a["targets"] for n, a in answers.items() if "targets" in a}
        abstained = {n: a["abstained"] for n, a in answers.items() if "abstained" in a}
        if not decided:
            raise ServiceError(422, f"bars: no agent could decide on this snapshot: {abstained}", field="bars")
        targets = {n: np.array([t[s] for s in snap.symbols]) for n, t in decided.items()}
        try:
            combined, expl, state = self.pipeline.combine(snap, targets, state)
            sized, report, state = await self.size(snap, account, combined, state)
        except StateConflict:
            raise
        except ValueError as exc:  # the core refused this snapshot's numbers: the input's fault
            raise ServiceError(422, f"bars: cannot decide on this snapshot: {exc}", field="bars") from None
        decision, state = self.pipeline.finish(snap, targets, abstained, combined, expl, sized, report, state)
        return decision, state

    def _response(self, d: Decision, run_id: str | None) -> DecideResponse:
        agents = {}
        if d.rebalance:
            for n in self.members:
                if n in d.members:
                    agents[n] = AgentDecision(weight=d.agent_weights[n], abstained=None,
                                              targets=dict(zip(d.symbols, map(float, d.members[n]))))
                elif n in d.abstained:
                    agents[n] = AgentDecision(weight=0.0, targets={}, abstained=d.abstained[n])
        expl = d.explanation
        risk = dict(expl.get("risk", {}))
        if d.rebalance:
            risk["ensemble"] = {k: expl[k] for k in ("prior", "performance_score") if k in expl}
        else:
            risk["hold"] = expl.get("hold")
        return DecideResponse(as_of=d.as_of, run_id=run_id, rebalance=d.rebalance, targets=d.targets_dict(),
                              agents=agents, regime=dict(d.regime) if d.regime else None, risk=risk)
