"""What the `trader` commands share: the settings option, the Ray CLI, auth, the project root."""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

from cluster.settings import Settings, SettingsError, load_settings

PROJECT_ROOT = Path(__file__).resolve().parents[2]
# Never shipped to the cluster with a job: local state, caches, secrets.
JOB_EXCLUDES = [".git", ".venv", "**/__pycache__", "runs/", "mlruns/", ".env", "*.sqlite", "*.db"]


class CommandError(RuntimeError):
    """A command cannot proceed; the message says why and what to do."""


def add_settings_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", metavar="PATH", default=None,
                        help="settings YAML (default: $KRT_CONFIG, else ./trader.yaml if present)")


def settings_from(args: argparse.Namespace) -> Settings:
    try:
        return load_settings(getattr(args, "config", None))
    except SettingsError as exc:
        raise CommandError(str(exc)) from None


def ray_env(settings: Settings, base: dict | None = None) -> dict[str, str]:
    """Environment for talking to a Ray cluster: token auth on (Ray 2.60 default), token file."""
    env = dict(os.environ if base is None else base)
    env.setdefault("RAY_AUTH_MODE", "token")
    env.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    if settings.cluster.auth_token_file:
        env["RAY_AUTH_TOKEN_PATH"] = str(Path(os.path.expanduser(str(settings.cluster.auth_token_file))))
    return env


def apply_ray_env(settings: Settings) -> None:
    """Same as `ray_env`, applied to this process (before `import ray` connects anywhere)."""
    os.environ.update({k: v for k, v in ray_env(settings, {}).items()})
    os.environ.setdefault("RAY_AUTH_MODE", "token")


def ray_cli() -> list[str]:
    """The `ray` command of this interpreter's environment (never a different Ray on PATH)."""
    exe = Path(sys.executable).parent / "ray"
    return [str(exe)] if exe.exists() else [sys.executable, "-m", "ray.scripts.scripts"]


def cluster_yaml(args: argparse.Namespace, settings: Settings) -> Path:
    path = Path(getattr(args, "cluster_config", None) or settings.cluster.config)
    if not path.is_absolute():
        path = (Path.cwd() / path) if (Path.cwd() / path).exists() else PROJECT_ROOT / path
    if not path.is_file():
        raise CommandError(f"cluster file not found: {path} (pass --cluster-config or set cluster.config)")
    return path


def run(cmd: list[str], env: dict[str, str], cwd: Path = PROJECT_ROOT, check: bool = True) -> int:
    print("+ " + " ".join(cmd), flush=True)
    rc = subprocess.call(cmd, env=env, cwd=cwd)
    if check and rc != 0:
        raise CommandError(f"`{' '.join(cmd[:3])} ...` failed with exit code {rc}")
    return rc


def examples(*lines: str) -> str:
    return "examples:\n" + "\n".join(f"  {line}" for line in lines)


# exit codes of every `trader` command
EXIT_OK, EXIT_RUNTIME, EXIT_USAGE = 0, 1, 2


def error_line(command: str, message: object) -> str:
    """The one voice of every command's errors: `trader <command>: error: <message>`."""
    return f"trader {command}: error: {message}"


def note_line(command: str, message: object) -> str:
    return f"trader {command}: note: {message}"


def input_errors() -> tuple[type[Exception], ...]:
    """Errors that mean the input was wrong (exit 2): the commands' own, bad data files, bad values."""
    from backtest.cli import CommandError as BacktestInputError
    from market.data import DataError

    return CommandError, BacktestInputError, DataError, ValueError


def reports_errors(func):
    """Bad input (CommandError, DataError, ValueError) → one line `trader <command>: error: …` on
    stderr and exit code 2, no traceback; anything else propagates to cli.main (exit 1)."""
    def wrapper(args):
        try:
            return func(args)
        except input_errors() as exc:
            command = (getattr(args, "command_name", None) or getattr(args, "command", None)
                       or func.__module__.rsplit(".", 1)[-1])
            print(error_line(command, exc), file=sys.stderr)
            return EXIT_USAGE
    wrapper.__name__ = func.__name__
    wrapper.__doc__ = func.__doc__
    return wrapper


def new_parser(subparsers, name: str, help: str, description: str, example_lines: list[str]):
    """A subcommand parser with examples in --help; `command_name` lets errors name the command."""
    parser = subparsers.add_parser(name, help=help, description=description,
                                   epilog=examples(*example_lines),
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.set_defaults(command_name=name)
    return parser
