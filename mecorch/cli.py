"""The `mecorch` command: the server, the doctor, the demo, and a CLI over
the REST API for packages and app instances."""

from __future__ import annotations

import argparse
import logging
import signal
import sys

from . import __version__, config
from .errors import MecorchError


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="mecorch",
        description="Unified MEC orchestrator: containers and VMs on edge hosts.")
    p.add_argument("--version", action="version", version=f"mecorch {__version__}")
    p.add_argument("--config", metavar="FILE",
                   help="YAML config overlaid on the embedded default")
    p.add_argument("--api", metavar="URL",
                   help="mecorch API to talk to (default: http://<api.listen>)")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    s = sub.add_parser("serve", help="run the orchestrator and its REST API")
    s.add_argument("--listen", metavar="HOST:PORT", help="default: api.listen (127.0.0.1:8080)")
    s.add_argument("-v", "--verbose", action="store_true")
    sub.add_parser("doctor", help="check every configured backend for real")
    d = sub.add_parser("demo", help="onboard, deploy, reach and terminate the sample apps")
    d.add_argument("--listen", metavar="HOST:PORT", default="127.0.0.1:8080")

    pkg = sub.add_parser("package", help="build and manage app packages").add_subparsers(
        dest="action", required=True, metavar="ACTION")
    b = pkg.add_parser("build", help="make a package zip from a folder")
    b.add_argument("dir")
    b.add_argument("-o", "--output", help="zip to write (default: <dir>.zip)")
    b.add_argument("--sign", metavar="KEY", help="PEM private key to sign the manifest with")
    o = pkg.add_parser("onboard", help="onboard a package zip")
    o.add_argument("zip")
    o.add_argument("--name")
    o.add_argument("--pkg-version", default="1.0")
    o.add_argument("--upload", action="store_true",
                   help="send the zip over the API (create + PUT package_content) instead of "
                        "giving mecorch its path; for a mecorch on another machine")
    pkg.add_parser("list", help="list onboarded packages").add_argument("--filter")
    for action in ("show", "enable", "disable", "delete"):
        pkg.add_parser(action, help=f"{action} a package").add_argument("id")

    app = sub.add_parser("app", help="create, deploy and terminate app instances").add_subparsers(
        dest="action", required=True, metavar="ACTION")
    c = app.add_parser("create", help="create an instance of an onboarded app")
    c.add_argument("app_d_id")
    c.add_argument("--name")
    i = app.add_parser("instantiate", help="deploy an instance")
    i.add_argument("id")
    i.add_argument("--type", choices=["CONTAINER", "VM"], help="deploymentType")
    i.add_argument("--orchestration", metavar="FILE", help="TOSCA or Kubernetes-style YAML")
    i.add_argument("--host", default="default", help="selected MEC host id")
    t = app.add_parser("terminate", help="terminate an instance")
    t.add_argument("id")
    t.add_argument("--forceful", action="store_true")
    t.add_argument("--timeout", type=int, default=30, help="graceful timeout, seconds")
    app.add_parser("list", help="list instances").add_argument("--filter")
    for action in ("show", "delete"):
        app.add_parser(action, help=f"{action} an instance").add_argument("id")
    return p


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        cfg = config.load(args.config)
        if args.command == "doctor":
            from . import doctor
            return doctor.main(cfg)
        if args.command == "serve":
            return serve(cfg, args.listen or cfg["api"]["listen"], args.verbose)
        if args.command == "demo":
            from . import demo
            return demo.main(cfg, args.listen)
        if args.command == "package" and args.action == "build":
            from .package import build_package
            out = build_package(args.dir, args.output or f"{args.dir.rstrip('/')}.zip",
                                signing_key=args.sign)
            print(out)
            return 0
        from . import commands
        from .client import Client
        client = Client(args.api or f"http://{cfg['api']['listen']}")
        return getattr(commands, f"{args.command}_{args.action}")(client, args)
    except MecorchError as e:
        print(f"mecorch: {e.detail}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


def serve(cfg: dict, listen: str, verbose: bool = False) -> int:
    from .api import make_server
    from .orchestrator import Orchestrator
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO,
                        format="%(asctime)s %(name)s %(levelname)s %(message)s")
    orch = Orchestrator(cfg)
    try:
        server = make_server(orch, listen)
        orch.recover()
        orch.start_background()         # periodic reconciliation
        # SIGTERM ends the process like Ctrl-C: finish the request, close.
        signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
        host, port = server.server_address[:2]
        logging.getLogger("mecorch").info("serving on http://%s:%s", host, port)
        try:
            server.serve_forever(poll_interval=0.2)
        except KeyboardInterrupt:
            pass
        finally:
            server.server_close()
    finally:
        orch.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())

