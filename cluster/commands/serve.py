"""`trader serve`: deploy (or update in place) the decision service on the current Ray cluster.

The agents are `serve.agents` plus, unless `serve.rl_champions` is false (`--no-rl-champions`),
the RL agents with a model: `serve.models.<algo>`, KRT_MODEL_<ALGO>, or the MLflow registry's
champion (serving/champions.py). The command prints the agents and model versions it deploys.
"""
from __future__ import annotations

from cluster.commands._common import (
    CommandError,
    add_settings_arg,
    apply_ray_env,
    new_parser,
    reports_errors,
    settings_from,
)


def register(subparsers) -> None:
    p = new_parser(
        subparsers, "serve", help="deploy or update the Serve app (POST /v1/decide)",
        description="Connect to the running Ray cluster and deploy the decision service "
                    "(serving.app: Ensemble + Risk deployments). Running it again updates the app in place "
                    "(Serve rolls the replicas). HTTP binds to serve.host (127.0.0.1 by default: reach it "
                    "through SSH forwarding). On a remote cluster run it there as a job: "
                    "`trader submit -- python -m cluster.cli serve`.",
        example_lines=["trader serve                      # on the head, or a laptop-local Ray",
                       "trader serve --replicas 2 --port 8100",
                       "trader submit -- python -m cluster.cli serve --address auto"])
    p.add_argument("--address", help="Ray address (default: settings cluster.address, else 'auto')")
    p.add_argument("--host", help="HTTP host (default: settings serve.host)")
    p.add_argument("--port", type=int, help="HTTP port (default: settings serve.port)")
    p.add_argument("--replicas", type=int, help="replicas of the ensemble deployment (default: settings)")
    p.add_argument("--agents", help="comma-separated strategies (default: settings serve.agents)")
    p.add_argument("--no-rl-champions", action="store_true",
                   help="serve only the listed agents (default: add dqn/appo when a champion exists)")
    add_settings_arg(p)
    p.set_defaults(func=main)


@reports_errors
def main(args) -> int:
    settings = settings_from(args)
    agents = [a.strip() for a in args.agents.split(",") if a.strip()] if args.agents else None
    if agents:  # refused before any cluster is contacted, with difflib's closest names
        from backtest.cli import unknown_name
        from strategies.registry import STRATEGIES

        for agent in agents:
            if agent not in STRATEGIES:
                raise CommandError(unknown_name("agent", agent, sorted(STRATEGIES)))
    updates = {k: v for k, v in (("host", args.host), ("port", args.port), ("replicas", args.replicas),
                                 ("agents", agents)) if v}
    if args.no_rl_champions:
        updates["rl_champions"] = False
    if updates:
        settings = settings.model_copy(update={"serve": settings.serve.model_copy(update=updates)})
    apply_ray_env(settings)
    url = deploy(settings, address=args.address or settings.cluster.address or "auto")
    print(f"Serve app '{settings.serve.app_name}' is running: POST {url}/v1/decide", flush=True)
    return 0


def deploy(settings, address: str = "auto") -> str:
    """Deploy the app into the cluster at `address`; returns its base URL."""
    try:
        from serving.app import build_app
    except ImportError as exc:
        raise CommandError(f"the Serve application (serving.app.build_app) is not available: {exc}") from None
    import ray
    from ray import serve

    from serving.champions import plan

    try:
        served = plan(settings.serve.agents, rl_champions=settings.serve.rl_champions, models=settings.serve.models)
    except ValueError as exc:
        raise CommandError(str(exc)) from None
    print(served.summary(), flush=True)
    if not ray.is_initialized():
        try:
            ray.init(address=address, log_to_driver=False, configure_logging=False)
        except ConnectionError as exc:
            raise CommandError(f"no Ray cluster at {address!r}: {exc}. Start one with `trader up` "
                               "(or `ray start --head`), or pass --address.") from None
    serve.start(http_options={"host": settings.serve.host, "port": settings.serve.port})
    t = settings.trading
    from serving.auth import load_secret
    from strategies.pipeline import DecisionConfig

    config = DecisionConfig(max_position=t.max_position, max_gross=t.max_gross, cvar_budget=t.cvar_budget)
    app = build_app(served.agents, config, secret=load_secret(), models=served.models,
                    tracking_uri=served.tracking_uri, replicas=settings.serve.replicas,
                    state_path=settings.journal.parent / "decision_state.sqlite")
    serve.run(app, name=settings.serve.app_name, route_prefix=settings.serve.route_prefix, blocking=False)
    return settings.serve.url
