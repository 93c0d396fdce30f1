"""`make demo`: identification end to end, offline, in one command.

    python -m tests.fakes.demo            (what `make demo` runs, after `migrate`)

1. writes a tiny model library under $MODELXREF_DATA_DIR/demo/models (see demo_library.py);
2. starts FakeCivitai and FakeHub as subprocesses on 127.0.0.1:8765 / 8766
   ($DEMO_CIVITAI_PORT / $DEMO_HF_PORT), seeded so that some files are known;
3. starts the app as `make run` does (honcho, Procfile: web + the workers) pointed at them;
4. indexes the Hub repo, registers the library with `register --wait`, waits until
   identification settles and prints what each file turned out to be;
5. keeps everything running until Ctrl-C, then stops what it started.

Real tokens are blanked for the children: the fakes never see a CIVITAI_API_KEY or HF_TOKEN.
"""
from __future__ import annotations

import json
import os
import shlex
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
BIN = ROOT / ".venv" / "bin"

# Run by `manage.py shell -c` to report the demo files' state as one JSON line.
_STATE_SNIPPET = r"""
import json
from models_catalog.models import CivitaiLookup, LocalFile, Match
root = {root!r}
rows = []
for lf in LocalFile.objects.filter(path__startswith=root).order_by("path"):
    matches = [
        {{"kind": m.kind, "source": m.source_file.version.model.source, "model": m.source_file.version.model.name,
          "version": m.source_file.version.name, "file": m.source_file.name, "evidence": m.evidence}}
        for m in Match.objects.filter(local_file=lf).select_related("source_file__version__model")
    ]
    autov2 = ""
    try:
        autov2 = lf.hashes.autov2
    except LocalFile.hashes.RelatedObjectDoesNotExist:
        pass
    rows.append({{"path": lf.path, "status": lf.status, "format": lf.format, "verdict": lf.safety_verdict,
                  "autov2": autov2, "matches": matches}})
busy = CivitaiLookup.objects.filter(state__in=["pending", "running"]).count()
print(json.dumps({{"files": rows, "lookups_busy": busy}}))
"""


class DemoError(Exception):
    """The demo cannot start (busy port, a fake or the app died); the message says what to do."""


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name, "").strip()
    if not value:
        return default
    try:
        return int(value)
    except ValueError:
        raise DemoError(f"{name} must be a port number, got {value!r}") from None


def _port_is_free(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def _http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return response.status < 500
    except urllib.error.HTTPError as exc:
        return exc.code < 500
    except (OSError, ValueError):
        return False


class Processes:
    """Children this demo started, each in its own session; stopped in reverse order."""

    def __init__(self, log_dir: Path):
        self.log_dir = log_dir
        self.started: list[tuple[str, subprocess.Popen, Path]] = []

    def start(self, name: str, argv: list[str], env: dict[str, str]) -> subprocess.Popen:
        log_path = self.log_dir / f"{name}.log"
        log = open(log_path, "ab")
        proc = subprocess.Popen(argv, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True)
        log.close()  # the child holds its own copy
        self.started.append((name, proc, log_path))
        return proc

    def wait_ready(self, name: str, url: str, *, timeout: float) -> None:
        proc, log_path = next((p, lp) for n, p, lp in self.started if n == name)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise DemoError(f"{name} exited with code {proc.returncode}:\n{_tail(log_path)}")
            if _http_ok(url):
                return
            time.sleep(0.3)
        raise DemoError(f"{name} did not answer at {url} within {timeout:.0f} s:\n{_tail(log_path)}")

    def first_dead(self) -> tuple[str, int, Path] | None:
        for name, proc, log_path in self.started:
            if proc.poll() is not None:
                return name, proc.returncode, log_path
        return None

    def stop_all(self) -> None:
        for name, proc, _ in reversed(self.started):
            if proc.poll() is None:
                # SIGTERM to the child only: honcho forwards it to web and worker and waits for them.
                proc.terminate()
        for name, proc, _ in reversed(self.started):
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                print(f"  {name} ignored SIGTERM; killing its process group", flush=True)
                try:
                    os.killpg(proc.pid, signal.SIGKILL)  # its own session: only what it started
                except ProcessLookupError:
                    pass
                proc.wait(timeout=5)


def _tail(path: Path, lines: int = 25) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def _manage(args: list[str], env: dict[str, str], *, capture: bool = False, timeout: float | None = None):
    argv = [sys.executable, str(ROOT / "manage.py"), *args]
    done = subprocess.run(argv, cwd=ROOT, env=env, capture_output=capture, text=True, timeout=timeout)
    if done.returncode != 0:
        detail = (done.stderr or done.stdout or "").strip()[-2000:] if capture else ""
        raise DemoError(f"`manage.py {' '.join(args)}` failed (exit {done.returncode}) {detail}")
    return done


def _state(models: Path, env: dict[str, str]) -> dict:
    done = _manage(["shell", "-c", _STATE_SNIPPET.format(root=str(models))], env, capture=True, timeout=120)
    return json.loads(done.stdout.strip().splitlines()[-1])


def _wait_identified(models: Path, env: dict[str, str], *, timeout: float = 120) -> dict:
    """Until every file is done, no Civitai lookup is pending and the matches stopped changing."""
    deadline = time.monotonic() + timeout
    last, stable = None, 0
    state = _state(models, env)
    while time.monotonic() < deadline:
        settled = state["lookups_busy"] == 0 and all(f["status"] in ("done", "error") for f in state["files"])
        key = json.dumps([f["matches"] for f in state["files"]], sort_keys=True)
        stable = stable + 1 if settled and key == last else 0
        if stable >= 3:
            return state
        last = key
        time.sleep(1.5)
        state = _state(models, env)
    print("  (identification is still going on; the table shows it so far)", flush=True)
    return state


def _print_results(state: dict, lib, models: Path) -> None:
    from tests.fakes.demo_library import EXPECTED_MATCH

    by_path = {str(p): key for key, p in lib.files.items()}
    print("\nWhat each demo file turned out to be:\n", flush=True)
    width = max([len(os.path.relpath(r["path"], models)) for r in state["files"]] + [4])
    print(f"  {'':2} {'file':<{width}} {'verdict':<10} {'match':<20} source")
    ok = 0
    for row in state["files"]:
        key = by_path.get(row["path"], "")
        rel = os.path.relpath(row["path"], models)
        kinds = sorted({m["kind"] for m in row["matches"]})
        expected = EXPECTED_MATCH.get(key, "")
        good = expected in kinds if expected else not kinds
        if key == "evil":
            good = good and row["verdict"] == "dangerous"
        ok += good
        first = row["matches"][0] if row["matches"] else None
        where = (f"{first['source']}: {first['model']} / {first['version']} / {first['file']}" if first else
                 ("-" if row["status"] == "done" else row["status"]))
        print(f"  {'ok' if good else '??':2} {rel:<{width}} {row['verdict'] or '-':<10} {', '.join(kinds) or '-':<20} {where}")
        if key in lib.notes:
            print(f"  {'':2}   {lib.notes[key]}")
    print(f"\n  {ok} of {len(state['files'])} files as expected", flush=True)


def _open_browser(url: str) -> None:
    """Only when there is a real, graphical browser to open; never fail the demo over it."""
    try:
        import webbrowser

        if not os.environ.get("BROWSER"):
            if sys.platform.startswith("linux") and not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")):
                return
            browser = webbrowser.get()
            if getattr(browser, "name", "") in {"www-browser", "links", "elinks", "lynx", "w3m"}:
                return  # a text browser would take over this terminal
        webbrowser.open(url, new=2)
    except Exception:  # noqa: BLE001 - a browser is a nicety
        pass


def _raise_interrupt(signum, frame):
    raise KeyboardInterrupt


def run() -> int:
    from tests.fakes.demo_library import build_demo_library

    host = os.environ.get("HOST") or "127.0.0.1"
    web_port = _env_int("PORT", 8000)
    civitai_port = _env_int("DEMO_CIVITAI_PORT", 8765)
    hf_port = _env_int("DEMO_HF_PORT", 8766)
    data_dir = Path(os.environ.get("MODELXREF_DATA_DIR") or ROOT / "var").expanduser().resolve()
    demo_dir = data_dir / "demo"
    models = demo_dir / "models"
    demo_dir.mkdir(parents=True, exist_ok=True)

    if len({web_port, civitai_port, hf_port}) < 3:  # each would find the port free before the others start
        raise DemoError(f"PORT={web_port}, DEMO_CIVITAI_PORT={civitai_port} and DEMO_HF_PORT={hf_port} must differ")
    for what, h, port, var in (("FakeCivitai", "127.0.0.1", civitai_port, "DEMO_CIVITAI_PORT"),
                               ("FakeHub", "127.0.0.1", hf_port, "DEMO_HF_PORT"),
                               ("the web server", host, web_port, "PORT")):
        if not _port_is_free(h, port):
            raise DemoError(f"port {port} for {what} is in use: stop what uses it or set {var}=<free port>")

    print(f"Writing the demo library under {models} ...", flush=True)
    lib = build_demo_library(models)
    seed_path = demo_dir / "civitai-seed.json"
    seed_path.write_text(json.dumps(lib.civitai_seed, indent=2))

    civitai_base = f"http://127.0.0.1:{civitai_port}/api/v1"
    hf_endpoint = f"http://127.0.0.1:{hf_port}"
    env = dict(os.environ)
    env.update({
        "MODELXREF_DATA_DIR": str(data_dir), "MODELXREF_MODEL_ROOTS": str(models),
        "CIVITAI_ENABLED": "true", "CIVITAI_API_BASE": civitai_base, "CIVITAI_API_KEY": "",
        "HF_ENDPOINT": hf_endpoint, "HF_TOKEN": "", "HF_HUB_DISABLE_TELEMETRY": "1",
        "MODELXREF_PREVIEW_IMAGE_HOSTS": "127.0.0.1",  # the stand-in serves the demo's preview images
        "HOST": host, "PORT": str(web_port), "PYTHONUNBUFFERED": "1",
    })
    procs = Processes(demo_dir)
    signal.signal(signal.SIGTERM, _raise_interrupt)
    signal.signal(signal.SIGINT, _raise_interrupt)  # also when started in the background (SIGINT ignored)
    try:
        print(f"Starting FakeCivitai on {civitai_base} and FakeHub on {hf_endpoint} ...", flush=True)
        procs.start("fake-civitai", [sys.executable, "-m", "tests.fakes.civitai", "--port", str(civitai_port),
                                     "--seed", str(seed_path)], env)
        procs.start("fake-hub", [sys.executable, "-m", "tests.fakes.demo", "--serve-hub", "--port", str(hf_port),
                                 "--models", str(models)], env)
        procs.wait_ready("fake-civitai", f"{civitai_base}/models?limit=1", timeout=30)
        procs.wait_ready("fake-hub", f"{hf_endpoint}/api/models/{lib.hf_repo_id}", timeout=30)

        web_url = f"http://{host}:{web_port}/"
        print(f"Starting the app (honcho: web + workers) on {web_url} ...", flush=True)
        procs.start("app", [str(BIN / "honcho"), "start", "-f", str(ROOT / "Procfile")], env)
        procs.wait_ready("app", web_url, timeout=90)

        print(f"\n$ manage.py hf_index {lib.hf_repo_id}", flush=True)
        _manage(["hf_index", lib.hf_repo_id], env, timeout=120)
        print(f"\n$ manage.py register {models} --wait", flush=True)
        _manage(["register", str(models), "--wait", "--timeout", "600"], env)
        print("\nWaiting for identification (local catalog, Civitai batch, fall-backs) to settle ...", flush=True)
        state = _wait_identified(models, env)
        _print_results(state, lib, models)

        frog = next((r for r in state["files"] if r["path"] == str(lib.files["frog_fp32"])), None)
        autov2 = (frog or {}).get("autov2", "").upper() or "<an AutoV2 from the table above>"
        prefix = f"MODELXREF_DATA_DIR={shlex.quote(str(data_dir))} CIVITAI_API_BASE={civitai_base} .venv/bin/python manage.py"
        print(f"""
ModelXRef demo is running: {web_url}
  log in as admin; the password is in {data_dir / 'admin-password.txt'}
  logs: {demo_dir}/app.log (web + workers), fake-civitai.log, fake-hub.log

What to look at:
  {web_url}                 your files: formats, safety verdicts, how each was identified
  {web_url}catalog/         models and versions learnt from FakeCivitai and FakeHub
  {web_url}duplicates/      the Toad Diffusion copies (fp32, fp16, renamed, .ckpt, diffusers) as one group
  {web_url}lookup/          paste a hash or an A1111 infotext
  the file misc/free-upscaler-4x.pt: 'dangerous' (its pickle calls os.system), never executed

From another terminal (in {ROOT}):
  {prefix} lookup {autov2}
  {prefix} duplicates
  {prefix} inspect {shlex.quote(str(lib.files['evil']))}

Ctrl-C stops the fakes, the web server and the worker.""", flush=True)
        _open_browser(web_url)
        while True:
            dead = procs.first_dead()
            if dead:
                name, code, log_path = dead
                raise DemoError(f"{name} exited with code {code}:\n{_tail(log_path)}")
            time.sleep(1)
    except KeyboardInterrupt:
        print("\nStopping the demo ...", flush=True)
        return 0
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C must not cut the clean-up short
        procs.stop_all()
        print("Stopped.", flush=True)


def serve_hub(port: int, models: Path) -> int:
    """The FakeHub subprocess: one repo holding the demo VAE as an LFS file."""
    try:
        import pytest  # noqa: F401 - tests.fakes.huggingface defines fixtures with it
    except ImportError:  # `make demo` needs only requirements.txt: a stand-in decorator will do
        import types

        sys.modules["pytest"] = types.SimpleNamespace(fixture=lambda fn=None, **kw: fn if fn else (lambda f: f))
    from tests.fakes.demo_library import HF_VAE_PATH, build_demo_library
    from tests.fakes.huggingface import FakeHub

    lib = build_demo_library(models)
    hub = FakeHub("127.0.0.1", port)
    hub.add_repo(lib.hf_repo_id, lib.hf_files, lfs_paths={HF_VAE_PATH})
    hub.start()
    print(f"FakeHub on {hub.endpoint} serving {lib.hf_repo_id}", flush=True)
    signal.signal(signal.SIGTERM, _raise_interrupt)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass
    finally:
        hub.stop()
    return 0


def main(argv: list[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--serve-hub", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--models", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.serve_hub:
        return serve_hub(args.port, args.models)
    try:
        return run()
    except DemoError as exc:
        print(f"\nmake demo: {exc}", file=sys.stderr, flush=True)
        return 1


if __name__ == "__main__":
    sys.exit(main())
