"""The `mecorch` command: the server, the doctor, the demo, the effective
configuration, and a CLI over the REST API for packages, app instances and
edge hosts."""

from __future__ import annotations

import argparse
import os
import signal
import sys

from mecorch import __version__
from mecorch.kernel import config, fileutil, heap
from mecorch.kernel.errors import InvalidInput, MecorchError

FILTER_HELP = """\
filter syntax (ETSI MEC 009 / NFV-SOL 013 attribute filters):
  (op,attribute,value[,value...]) terms joined by ';' (all must hold), e.g.
    --filter '(eq,appName,sample-http);(neq,usageState,IN_USE)'
    --filter '(in,instantiationState,INSTANTIATED)'
    --filter '(eq,instantiatedAppState/operationalState,STOPPED)'
  ops: eq neq in nin gt gte lt lte cont ncont; nested attributes with '/'."""

ID_HELP = ("the id, a unique prefix of it, or an appDId (an instance: when that app has "
           "one instance only)")


def _output(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """-o/--output, accepted before or after the command."""
    parser.add_argument("-o", "--output", choices=("text", "json"), default=argparse.SUPPRESS,
                        help="text: aligned columns (default); json: the API's documents")
    return parser


def _parser() -> argparse.ArgumentParser:
    fmt = argparse.RawDescriptionHelpFormatter
    p = argparse.ArgumentParser(
        prog="mecorch", formatter_class=fmt,
        description="Unified MEC orchestrator: containers and VMs on edge hosts.",
        epilog="API access: with api.token_file configured every call needs a bearer "
               "token: --token TOKEN or the MECORCH_TOKEN environment variable.\n\n"
               + FILTER_HELP)
    p.add_argument("--version", action="version", version=f"mecorch {__version__}")
    p.add_argument("--config", metavar="FILE",
                   help="YAML config overlaid on the embedded default "
                        "(config/mecorch.yaml documents every key)")
    p.add_argument("--api", metavar="URL[,URL...]",
                   help="mecorch API to talk to (default: $MECORCH_API, else "
                        "http://<api.listen>); several URLs separated by commas (the "
                        "replicas of an MEO): a request goes on to the next when one cannot "
                        "be reached or answers 503, if sending it again is safe")
    p.add_argument("--token", metavar="TOKEN",
                   help="bearer token for the API (default: $MECORCH_TOKEN, which other "
                        "users cannot see in `ps`; needed when the server has api.token_file)")
    _output(p)
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    s = sub.add_parser("serve", help="run the orchestrator, its REST API and status page")
    s.add_argument("--listen", metavar="HOST:PORT",
                   help="address to serve on (default: api.listen, 127.0.0.1:8080)")
    s.add_argument("-v", "--verbose", action="count", default=0,
                   help="-v: mecorch's debug lines; -vv: the libraries' too "
                        "(default: mecorch at INFO, libraries at WARNING)")
    s.add_argument("--log-format", choices=("text", "json"), default="text",
                   help="text lines (default) or one JSON object per line")
    s.add_argument("--role", choices=("all", "meo", "mepm"),
                   help="all: one node, MEO and MEPM in one process (default: the config's "
                        "`role`); meo: the system level, placing instances on the MEPMs of "
                        "meo.mepms and those that register; mepm: one edge host's MEPM")
    sub.add_parser("doctor", help="check every configured backend for real")
    d = sub.add_parser("demo", help="onboard, deploy, reach and terminate the sample apps")
    d.add_argument("--listen", metavar="HOST:PORT", default="127.0.0.1:8080",
                   help="address of the demo's own server (default 127.0.0.1:8080)")

    cfg = sub.add_parser("config", help="the effective configuration").add_subparsers(
        dest="action", required=True, metavar="ACTION")
    _output(cfg.add_parser("show", help="every key with its value and where it came from "
                                        "(default, the --config file, the default host, "
                                        "derived)"))

    pkg = sub.add_parser("package", help="build and manage app packages").add_subparsers(
        dest="action", required=True, metavar="ACTION")
    b = pkg.add_parser("build", help="make a package zip from a folder")
    b.add_argument("dir", help="folder with Definitions/, the manifest and Artifacts/")
    b.add_argument("--zip", dest="zip_out", metavar="FILE",
                   help="zip to write (default: <dir>.zip)")
    b.add_argument("--sign", metavar="KEY", help="PEM private key to sign the manifest with")
    cv = pkg.add_parser("convert", help="rewrite a package (SOL004 without "
                        "ETSI-Entry-Manifest, EdgeGallery-style CSAR, TOSCA AppD) in "
                        "mecorch's own layout")
    cv.add_argument("src", metavar="ZIP", help="the package to convert (every check is made)")
    cv.add_argument("--zip", dest="zip_out", metavar="FILE",
                    help="zip to write (default: <src>-mecorch.zip)")
    cv.add_argument("--sign", metavar="KEY", help="PEM private key to sign the manifest with")
    cv.add_argument("--trusted-key", metavar="PEM",
                    help="public key the source package's signature must verify with")
    o = _output(pkg.add_parser("onboard", help="onboard a package zip"))
    o.add_argument("zip", help="package zip on this machine (the server reads it)")
    o.add_argument("--name", help="appPkgName (default: the zip's name)")
    o.add_argument("--pkg-version", default="1.0", help="appPkgVersion (default 1.0)")
    o.add_argument("--upload", action="store_true",
                   help="send the zip over the API (create, then PUT package_content) instead "
                        "of giving the server its path: for a mecorch on another machine")
    pl = _output(pkg.add_parser("list", help="list onboarded packages", formatter_class=fmt,
                                epilog=FILTER_HELP))
    pl.add_argument("--filter", metavar="EXPR", help="attribute filter (see below)")
    for action in ("show", "enable", "disable", "delete"):
        _output(pkg.add_parser(action, help=f"{action} a package")).add_argument(
            "id", metavar="ID", help="package id, a unique prefix of it, or its appDId")

    app = sub.add_parser("app", help="create, deploy, operate and terminate app instances") \
        .add_subparsers(dest="action", required=True, metavar="ACTION")
    c = _output(app.add_parser("create", help="create an instance of an onboarded app"))
    c.add_argument("app_d_id", metavar="APPDID", help="appDId of an enabled package")
    c.add_argument("--name", help="appInstanceName (default: the AppD's appName)")
    i = _output(app.add_parser("instantiate", aliases=["deploy"], help="deploy an instance"))
    i.add_argument("id", metavar="ID", help=ID_HELP)
    i.add_argument("--type", metavar="VM|CONTAINER|0|1",
                   help="deploymentType (default: decided from --orchestration or the "
                        "package; a dual-format package: by the manner policy)")
    i.add_argument("--orchestration", metavar="FILE", help="TOSCA or Kubernetes-style YAML")
    i.add_argument("--host", help="edge host id (default: any configured host with room; "
                                  "with one host, that one)")
    i.add_argument("--rules", metavar="FILE",
                   help="YAML/JSON with appTrafficRule and/or appDNSRule: this deploy's "
                        "rules, replacing the AppD's")
    i.add_argument("--service-address", metavar="ADDR",
                   help="fix the service address the rules ask for (a trafficFilter "
                        "without dstAddress, a DNS rule without ipAddress) instead of "
                        "taking one from the host's range; placed on a host whose range "
                        "holds it")
    i.add_argument("--replica-of", metavar="INSTANCE",
                   help="deploy as a replica of this running instance of the same app: on "
                        "its host, on its service address and DNS name "
                        "(shareServiceAddress); the host's MEP spreads new connections "
                        "over the replicas")
    t = _output(app.add_parser("terminate", help="terminate an instance"))
    t.add_argument("id", metavar="ID", help=ID_HELP)
    t.add_argument("--forceful", action="store_true", help="stop at once, no notification")
    t.add_argument("--timeout", type=int, default=30,
                   help="graceful: seconds to wait for the app's confirmation (default 30)")
    up = _output(app.add_parser(
        "upgrade", help="rolling upgrade to another version of the package: the new version "
                        "is started beside the old one, switched to when ready, the old one "
                        "stopped (mecorch extension change_app_pkg)"))
    up.add_argument("id", metavar="ID", nargs="?",
                    help=f"{ID_HELP} (or --app and --host for every instance of an app)")
    up.add_argument("--package", required=True, metavar="PKG",
                    help="the version to run: package id or a unique prefix of it")
    up.add_argument("--app", metavar="APPDID",
                    help="every INSTANTIATED instance of this appDId on --host, one at a "
                         "time; stops at the first that fails")
    up.add_argument("--host", help="the edge host (with --app)")
    up.add_argument("--ready-timeout", type=int, metavar="S",
                    help="seconds the new version has to get ready (default 120)")
    rel = _output(app.add_parser(
        "relocate", help="move a deployed instance to another edge host (an MEO; mecorch "
                         "extension relocate): same id, DNS name, rules and data"))
    rel.add_argument("id", metavar="ID", help=ID_HELP)
    rel.add_argument("--host", help="the edge host to move it to (default: placement "
                                    "picks one, as for a deploy, other than its own)")
    rel.add_argument("--graceful-timeout", type=int, metavar="S",
                     help="seconds the app has to stop on its old host (its termination "
                          "notice, then the runtime's stop; default: the MEO's "
                          "orchestrator.graceful_timeout_s)")
    how = rel.add_mutually_exclusive_group()
    how.add_argument("--live", dest="live", action="store_const", const=True,
                     help="move it running (a VM between hosts whose VIMs take live "
                          "migration); refused, saying why, when it cannot")
    how.add_argument("--cold", dest="live", action="store_const", const=False,
                     help="stop, carry the data, start (default: live where it can be)")
    op = _output(app.add_parser("operate", help="start or stop a deployed instance"))
    op.add_argument("id", metavar="ID", help=ID_HELP)
    op.add_argument("to", choices=("start", "stop"), help="start: STARTED; stop: STOPPED")
    op.add_argument("--forceful", action="store_true", help="stop at once")
    op.add_argument("--timeout", type=int, default=30, help="graceful stop timeout, seconds")
    al = _output(app.add_parser("list", help="list instances: name, host, manner, states, "
                                             "addresses, DNS names", formatter_class=fmt,
                                epilog=FILTER_HELP))
    al.add_argument("--filter", metavar="EXPR", help="attribute filter (see below)")
    lg = app.add_parser("logs", help="the instance's output: a container's stdout/stderr, a "
                                     "VM's serial console (kept after termination until "
                                     "the instance is deleted)")
    lg.add_argument("id", metavar="ID", help=ID_HELP)
    lg.add_argument("--tail", type=int, metavar="N", help="only the last N lines")
    for action, what in (("show", "show an instance"), ("delete", "delete an instance"),
                         ("events", "the instance's LCM operation occurrences, oldest first"),
                         ("rules", "the instance's traffic and DNS rules")):
        _output(app.add_parser(action, help=what)).add_argument("id", metavar="ID", help=ID_HELP)

    srv = sub.add_parser("service", help="the MEC 011 services apps registered").add_subparsers(
        dest="action", required=True, metavar="ACTION")
    sl = _output(srv.add_parser("list", help="each service: id, name, category, version, "
                                             "state, transport endpoint (at an MEO: of every "
                                             "reachable host, with its host)"))
    sl.add_argument("--name", action="append", metavar="NAME",
                    help="only services of this serName (repeat for several)")
    sl.add_argument("--category", metavar="ID", help="only services of this category id")

    host = sub.add_parser("host", help="edge hosts").add_subparsers(
        dest="action", required=True, metavar="ACTION")
    _output(host.add_parser("list", help="each host: capacity (total, promised, free) and "
                                         "the health of its backends"))
    td = host.add_parser("teardown", help="with `mecorch serve` stopped and no instance or "
                                          "package left: remove everything mecorch made on the "
                                          "host (networks, pool, chains and hooks, links, its "
                                          "dnsmasq) and say what was removed")
    td.add_argument("host_id", metavar="HOST", nargs="?",
                    help="host id (default: the only configured host)")
    co = _output(host.add_parser("cordon", help="at an MEO: the host takes no new placement "
                                                "(its instances stay) until uncordon"))
    co.add_argument("host_id", metavar="HOST", help="edge host id")
    co.add_argument("--reason", help="why, shown with the host (e.g. maintenance)")
    un = _output(host.add_parser("uncordon", help="at an MEO: the host takes placements again"))
    un.add_argument("host_id", metavar="HOST", help="edge host id")
    dr = _output(host.add_parser("drain", help="at an MEO: cordon the host, then relocate "
                                               "every instance that can move; lists those "
                                               "that cannot, with why"))
    dr.add_argument("host_id", metavar="HOST", help="edge host id")
    dr.add_argument("--reason", help="the cordon's reason (default: drained)")
    return p


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    args.output = getattr(args, "output", "text")
    try:
        return _run(args)
    except MecorchError as e:
        print(f"mecorch: {e.detail}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # `mecorch package show ID | head`: the reader left; no traceback,
        # and none at exit either (Python flushes stdout once more).
        try:
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
        except OSError:
            pass
        return 128 + signal.SIGPIPE


def _run(args) -> int:
    if not (args.command == "package" and args.action in ("build", "convert")):
        # What mecorch writes (its store, packages, logs, driver state) is
        # its owner's only; a package zip built here is the user's own file
        # and keeps the user's umask.
        os.umask(fileutil.PRIVATE_UMASK)
    sources: dict[str, str] = {}
    cfg = config.load(args.config, sources=sources)
    if args.command == "config":
        from mecorch.cli import commands
        return commands.config_show(cfg, sources, args)
    if args.command == "doctor":
        from mecorch.cli import doctor
        return doctor.main(cfg)
    if args.command == "serve":
        return serve(cfg, args.listen or cfg["api"]["listen"], args.verbose, args.log_format,
                     args.role or cfg.get("role", "all"))
    if args.command == "demo":
        from mecorch.cli import demo
        return demo.main(cfg, args.listen)
    if args.command == "package" and args.action == "convert":
        from mecorch.package import convert_package
        src = args.src[:-4] if args.src.endswith(".zip") else args.src
        print(convert_package(args.src, args.zip_out or f"{src}-mecorch.zip",
                              signing_key=args.sign, trusted_key=args.trusted_key))
        return 0
    if args.command == "host" and args.action == "teardown":
        from mecorch.mepm.teardown import teardown
        if args.api:
            raise InvalidInput("host teardown does not go through an API (--api): it removes "
                               "what mecorch made on the machine it runs on, from that edge "
                               "host's config; run `mecorch --config FILE host teardown HOST` "
                               "there, with its `mecorch serve` stopped (an MEO has no host "
                               "objects of its own)")
        lines = teardown(cfg, args.host_id)
        for line in lines:
            print(line)
        if not lines:
            print("nothing to remove")
        return 0
    if args.command == "package" and args.action == "build":
        from mecorch.package import build_package
        out = build_package(args.dir, args.zip_out or f"{args.dir.rstrip('/')}.zip",
                            signing_key=args.sign)
        print(out)
        return 0
    from mecorch.cli import commands
    from mecorch.kernel.client import Client
    api = args.api or os.environ.get("MECORCH_API") or f"http://{cfg['api']['listen']}"
    client = Client(api, token=args.token)
    return getattr(commands, f"{args.command}_{args.action}")(client, args)


def serve(cfg: dict, listen: str, verbose: int = 0, log_format: str = "text",
          role: str = "all") -> int:
    from mecorch.kernel import logs
    logs.setup(verbose, log_format)
    fileutil.make_private(*_state_dirs(cfg))    # what an older mecorch left readable
    if role == "meo":
        return _serve_meo(cfg, listen)
    from mecorch.api import make_server, serve_app_networks, status
    from mecorch.mepm.watch import Watcher
    from mecorch.mepm.health import Prober
    from mecorch.mepm.lease import HostLease
    from mecorch.mepm.register import Registration
    from mecorch.mepm.orchestrator import Orchestrator
    if role == "mepm" and len(cfg["hosts"]) != 1:
        raise InvalidInput(f"an MEPM serves exactly one edge host; the config's hosts list "
                           f"has {len(cfg['hosts'])}")
    # One owner per host id: taken before anything is reconciled, so a
    # second mecorch never reads the first one's objects as orphans.
    lease = HostLease(cfg["state_dir"], listen)
    lease.acquire([h["id"] for h in cfg["hosts"]])
    heap.limit_arenas()                 # before any thread starts (mecorch.kernel.heap)
    orch = Orchestrator(cfg)
    watcher = Watcher(orch)
    # Health checks; a failed liveness check restarts the app under its
    # restart policy (counted, backed off, given up after the limit).
    prober = Prober(orch, on_dead=orch.supervisor.restart)
    registration = None
    try:
        server = make_server(orch, listen, role)
        orch.recover()
        # Mp1 and DNS where apps look: their networks' gateways (issue 12)
        app_servers = serve_app_networks(orch, server.server_address[1])
        orch.mep.serve_dns_everywhere()
        orch.start_background()         # periodic reconciliation
        if role == "mepm":
            orch.fence.start()          # only an MEPM has an MEO to hear from (mepm/fence.py)
        status.for_orchestrator(orch).start()      # backend probes, metrics
        watcher.start()                 # observed state from Docker's events
        prober.start()                  # health checks (mecorch.mepm.health)
        orch.usage_reader.start()       # each instance's figures (mecorch.mepm.usage)
        # SIGTERM ends the process like Ctrl-C: finish the request, close.
        signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
        host, port = server.server_address[:2]
        logs.event("serve.start", url=f"http://{host}:{port}", pid=os.getpid(), role=role,
                   hosts=",".join(orch.inventory.hosts))
        if role == "mepm" and (cfg.get("mepm") or {}).get("meo_url"):
            registration = Registration(cfg, server)
            registration.start()
        try:
            server.serve_forever(poll_interval=0.2)
        except KeyboardInterrupt:
            pass
        finally:
            server.server_close()
            for app_server in app_servers:
                app_server.shutdown()
                app_server.server_close()
    finally:
        if registration is not None:
            registration.stop()
        status.for_orchestrator(orch).stop()
        orch.usage_reader.stop()
        prober.stop()
        watcher.stop()
        orch.close()
        lease.release()
        logs.event("serve.stop", pid=os.getpid())
    return 0


def _state_dirs(cfg: dict) -> list[str]:
    """Where this mecorch keeps state: state_dir, run_dir and every
    driver's own (hosts[].ROLE.state_dir / run_dir)."""
    dirs = [cfg["state_dir"], cfg["run_dir"]]
    for host in cfg.get("hosts") or []:
        for role in config.ROLES:
            section = host.get(role) or {}
            dirs += [section[k] for k in ("state_dir", "run_dir") if section.get(k)]
    return list(dict.fromkeys(dirs))


def _notifications_here(meo, cfg: dict, server) -> None:
    """Where the MEO's hosts send their op notifications
    (mecorch.meo.follow): meo.callback_url, else the address it serves on;
    an unspecified one (0.0.0.0) names no host to reach: then polled."""
    import ipaddress
    import logging
    follower = meo.lcm.follower
    if follower.callback_base is not None:
        return
    host, port = server.server_address[:2]
    if ipaddress.ip_address(host).is_unspecified:
        logging.getLogger("mecorch.meo").warning(
            "serving on %s: set meo.callback_url for the MEPMs' op notifications (until "
            "then the MEO polls them)", host)
        return
    scheme = "https" if (cfg.get("api") or {}).get("tls_cert") else "http"
    follower.callback_base = f"{scheme}://{host if ':' not in host else f'[{host}]'}:{port}"


def _serve_meo(cfg: dict, listen: str) -> int:
    from mecorch.kernel import logs
    from mecorch.api import make_server, status
    from mecorch.meo.orchestrator import MeoOrchestrator
    heap.limit_arenas()
    meo = MeoOrchestrator(cfg)
    try:
        server = make_server(meo, listen, "meo")
        _notifications_here(meo, cfg, server)
        host, port = server.server_address[:2]
        meo.lease.url = (f"{'https' if (cfg.get('api') or {}).get('tls_cert') else 'http'}://"
                         f"{host if ':' not in host else f'[{host}]'}:{port}")
        # the metrics' event listener before any op runs (op durations,
        # placements): an MEO has no backend of its own to probe
        status.for_orchestrator(meo).start()
        meo.recover()
        meo.start_background()          # heartbeat, resync
        signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
        host, port = server.server_address[:2]
        logs.event("serve.start", url=f"http://{host}:{port}", pid=os.getpid(), role="meo",
                   hosts=",".join(e.host_id for e in meo.registry.entries()))
        try:
            server.serve_forever(poll_interval=0.2)
        except KeyboardInterrupt:
            pass
        finally:
            server.server_close()
    finally:
        status.for_orchestrator(meo).stop()
        meo.close()
        logs.event("serve.stop", pid=os.getpid())
    return 0

