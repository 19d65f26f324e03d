"""MLflow: where every trial is recorded and where trained agents are versioned.

Embedded default: a local sqlite store plus an artifact folder under `runs/mlflow` (or
`KRT_MLFLOW_DIR`); set `MLFLOW_TRACKING_URI` to use a server instead. Registered models are
named `agent-<algo>` (`agent-dqn`, `agent-appo`); the search gives the best version the alias
`challenger`, and `promote` moves `champion` only when the challenger beats the champion on a
window neither of them was trained or selected on, writing the reason onto the versions.

An agent artifact is a folder `agent/` in the run: `module/` (the RLlib RLModule checkpoint),
`env_spec.json` (universe, windows, costs, penalties and the fitted normaliser: everything needed
to rebuild observations exactly as in training) and `meta.json` (algo, hyper-parameters, seed).
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_DIR = Path(os.environ.get("KRT_MLFLOW_DIR", PROJECT_ROOT / "runs" / "mlflow"))
EXPERIMENT = "rl-agents"
CHALLENGER, CHAMPION = "challenger", "champion"
AGENT_PATH = "agent"
# sha256 of the agent folder, recorded at registration and checked before a model is loaded: an
# RLlib module is restored by unpickling, so a file changed in the store would run code in Serve
CHECKSUM_TAG = "krt.sha256"


class ModelIntegrityError(RuntimeError):
    """A registered model's files are not the ones that were registered."""


def folder_digest(path: str | Path) -> str:
    """sha256 over every file's relative path and content, in path order."""
    root = Path(path)
    h = hashlib.sha256()
    for f in sorted(p for p in root.rglob("*") if p.is_file()):
        h.update(f.relative_to(root).as_posix().encode())
        h.update(b"\0")
        h.update(hashlib.sha256(f.read_bytes()).digest())
    return h.hexdigest()


# forecasters searched by training/forecast_search.py, registered as forecaster-<name> next to
# the RL agents' agent-<algo>; their agent/ folder holds the fitted model file and meta.json
FORECASTERS = ("lgbm",)


def model_name(algo: str) -> str:
    return f"forecaster-{algo}" if algo in FORECASTERS else f"agent-{algo}"


def _embedded_db(base_dir: str | Path | None = None) -> Path:
    return Path(base_dir or DEFAULT_DIR).resolve() / "mlflow.db"


def tracking_uri(base_dir: str | Path | None = None) -> str:
    """MLFLOW_TRACKING_URI if set, else an sqlite file under `base_dir` (created)."""
    if not os.environ.get("MLFLOW_TRACKING_URI"):
        _embedded_db(base_dir).parent.mkdir(parents=True, exist_ok=True)
    return default_tracking_uri(base_dir)


def default_tracking_uri(base_dir: str | Path | None = None) -> str:
    """`tracking_uri()` without creating anything (for readers such as the dashboard)."""
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{_embedded_db(base_dir)}"


def existing_tracking_uri(base_dir: str | Path | None = None) -> str | None:
    """The store `tracking_uri()` would use, or None when it does not exist yet. Creates nothing.

    MLFLOW_TRACKING_URI wins (a server is assumed to exist; an sqlite or file store must exist on
    disk); else the embedded sqlite file under `base_dir` (default runs/mlflow or KRT_MLFLOW_DIR).
    """
    uri = os.environ.get("MLFLOW_TRACKING_URI")
    if uri:
        local = _local_store_path(uri)
        return uri if local is None or local.exists() else None
    db = _embedded_db(base_dir)
    return f"sqlite:///{db}" if db.is_file() else None


def _local_store_path(uri: str) -> Path | None:
    """The file or folder behind an sqlite / file store URI; None for a server."""
    if uri.startswith("sqlite:///"):
        return Path(uri[len("sqlite:///"):])
    if uri.startswith("file:"):
        from urllib.parse import urlparse
        return Path(urlparse(uri).path)
    if "://" not in uri:
        return Path(uri)
    return None


def artifact_root(base_dir: str | Path | None = None) -> str | None:
    """Artifact folder next to the sqlite store, also for an sqlite MLFLOW_TRACKING_URI (MLflow's
    own default would be ./mlruns under whatever folder the command ran in); None for a server
    or a file store, which decide themselves."""
    uri = os.environ.get("MLFLOW_TRACKING_URI")
    if uri:
        return (Path(uri[len("sqlite:///"):]).resolve().parent / "artifacts").as_uri() \
            if uri.startswith("sqlite:///") else None
    return (Path(base_dir or DEFAULT_DIR).resolve() / "artifacts").as_uri()


def client(uri: str):
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=uri, registry_uri=uri)


def ensure_experiment(uri: str, name: str = EXPERIMENT, base_dir: str | Path | None = None) -> str:
    c = client(uri)
    exp = c.get_experiment_by_name(name)
    if exp is not None:
        return exp.experiment_id
    try:
        return c.create_experiment(name, artifact_location=artifact_root(base_dir))
    except Exception:  # another trial created it first
        exp = c.get_experiment_by_name(name)
        if exp is None:
            raise
        return exp.experiment_id


def git_sha() -> str:
    """The code version: `git rev-parse HEAD` (+ "-dirty"), else KRT_CODE_VERSION, else "unknown".

    A `ray job submit --working-dir .` upload has no .git folder: pass the sha in the job's
    environment (`--runtime-env-json '{"env_vars": {"KRT_CODE_VERSION": "<sha>"}}'`).
    """
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=PROJECT_ROOT, capture_output=True, text=True,
                             timeout=5)
        sha = out.stdout.strip() if out.returncode == 0 else ""
        if sha:
            dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=PROJECT_ROOT,
                                   capture_output=True, text=True, timeout=5).stdout.strip()
            return sha + ("-dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        pass
    return os.environ.get("KRT_CODE_VERSION", "unknown")


def write_agent_dir(path: Path, module_dir: str | Path, spec: dict, meta: dict) -> Path:
    """Lay out an agent folder (module + env spec + meta) at `path`."""
    path = Path(path)
    if path.exists():
        shutil.rmtree(path)
    path.mkdir(parents=True)
    shutil.copytree(module_dir, path / "module")
    (path / "env_spec.json").write_text(json.dumps(spec))
    (path / "meta.json").write_text(json.dumps(meta, default=str))
    return path


@dataclass
class LoadedAgent:
    module: object
    spec: dict
    meta: dict
    source: str
    version: str | None = None


def resolve(uri: str, alias_or_version: str | None = None) -> tuple[str, str | None]:
    """`models:/name@alias` or `models:/name/3` → (models URI, version) ; a path → (path, None)."""
    if not uri.startswith("models:/"):
        return uri, None
    rest = uri[len("models:/"):]
    tracking = tracking_uri()
    c = client(tracking)
    if "@" in rest:
        name, alias = rest.split("@", 1)
        try:
            mv = c.get_model_version_by_alias(name, alias)
        except Exception as exc:
            raise LookupError(f"no version of {name!r} has alias {alias!r} in {tracking}") from exc
        return uri, str(mv.version)
    name, version = rest.split("/", 1)
    c.get_model_version(name, version)
    return uri, version


def load_agent(uri: str) -> LoadedAgent:
    """Load an agent from `models:/agent-dqn@champion`, `models:/agent-dqn/3` or a local folder."""
    from training.algos import load_module

    source, version = resolve(uri)
    if source.startswith("models:/"):
        name = source[len("models:/"):].split("@")[0].split("/")[0]
        # pin the version we resolved, so a concurrent promotion cannot mix two versions
        local = download_verified(tracking_uri(), name, str(version))
    else:
        local = Path(source)   # a folder the operator named in the settings (serve.models)
    if (local / AGENT_PATH / "module").exists():
        local = local / AGENT_PATH
    if not (local / "module").exists() or not (local / "env_spec.json").exists():
        raise FileNotFoundError(f"{uri} is not an agent folder (needs module/ and env_spec.json): {local}")
    return LoadedAgent(module=load_module(local / "module"), spec=json.loads((local / "env_spec.json").read_text()),
                       meta=json.loads((local / "meta.json").read_text()) if (local / "meta.json").exists() else {},
                       source=uri, version=version)


def download_verified(uri: str, name: str, version: str) -> Path:
    """Download version `version` of registered model `name` and check it against its checksum."""
    import mlflow

    expected = client(uri).get_model_version(name, version).tags.get(CHECKSUM_TAG)
    if not expected:
        raise ModelIntegrityError(f"models:/{name}/{version} has no {CHECKSUM_TAG} tag: it was not registered by "
                                  "kis-ray-trader (training/registry.register), refusing to load it")
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    local = Path(mlflow.artifacts.download_artifacts(artifact_uri=f"models:/{name}/{version}",
                                                     dst_path=tempfile.mkdtemp(prefix="krt-agent-")))
    folder = local / AGENT_PATH if (local / AGENT_PATH).is_dir() else local
    if folder_digest(folder) != expected:
        raise ModelIntegrityError(f"models:/{name}/{version}: the files in the store differ from the ones registered "
                                  f"(sha256 {folder_digest(folder)[:12]}… ≠ {expected[:12]}…); refusing to load it")
    return local


def register(uri: str, algo: str, run_id: str, description: str, tags: dict | None = None,
             alias: str = CHALLENGER) -> str:
    """Register the run's `agent/` folder as a new version of `model_name(algo)` (agent-<algo>,
    forecaster-<name>) with its sha256 and give it `alias`."""
    c = client(uri)
    name = model_name(algo)
    try:
        c.get_registered_model(name)
    except Exception:
        try:
            what = f"{algo} rank forecaster" if algo in FORECASTERS else f"RLlib {algo.upper()} trading agent"
            c.create_registered_model(name, description=f"{what} (kis-ray-trader)")
        except Exception:
            c.get_registered_model(name)  # created concurrently
    run = c.get_run(run_id)
    source = f"{run.info.artifact_uri}/{AGENT_PATH}"
    import mlflow

    with tempfile.TemporaryDirectory(prefix="krt-register-") as tmp:
        files = mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path=AGENT_PATH, dst_path=tmp,
                                                    tracking_uri=uri)
        digest = folder_digest(files)
    mv = c.create_model_version(name, source=source, run_id=run_id, description=description,
                                tags={**{k: str(v) for k, v in (tags or {}).items()}, CHECKSUM_TAG: digest})
    c.set_registered_model_alias(name, alias, mv.version)
    return str(mv.version)


def find_version(uri: str, model_uri: str) -> str:
    """The version `models:/name@alias` or `models:/name/N` names in the store at `uri`.

    LookupError when the model, alias or version is not there; other errors (an unreachable
    server) propagate. Unlike `resolve`, the store is given, never created.
    """
    if not model_uri.startswith("models:/"):
        raise ValueError(f"not a registered-model URI: {model_uri!r}")
    rest = model_uri[len("models:/"):]
    c = client(uri)
    try:
        if "@" in rest:
            name, alias = rest.split("@", 1)
            return str(c.get_model_version_by_alias(name, alias).version)
        name, version = rest.split("/", 1)
        return str(c.get_model_version(name, version).version)
    except Exception as exc:
        if _is_missing(exc):
            raise LookupError(f"{model_uri} is not in the MLflow registry at {uri}") from None
        raise


def _is_missing(exc: Exception) -> bool:
    code = getattr(exc, "error_code", "") or ""
    return code in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE", "NOT_FOUND")


def version_with_tag(uri: str, algo: str, key: str, value: str) -> str | None:
    """The newest version of model_name(algo) whose tag `key` is `value` (None if none, or no such model)."""
    try:
        versions = client(uri).search_model_versions(f"name = '{model_name(algo)}'")
    except Exception:
        return None
    hits = [int(v.version) for v in versions if v.tags.get(key) == value]
    return str(max(hits)) if hits else None


def alias_version(uri: str, algo: str, alias: str) -> str | None:
    try:
        return str(client(uri).get_model_version_by_alias(model_name(algo), alias).version)
    except Exception:
        return None
