"""The controller process: the chosen framework's application manager running the domain app.

``python -m controllers.manager os_ken|ryu [--ofp-listen-host H] [--ofp-tcp-listen-port P] APP``

Ryu's ``ryu-manager`` and os-ken 3's ``osken-manager`` are this sequence; os-ken 4 ships no
manager script, only its ``AppManager``, so one entry point drives all of them the same way
(the framework's green threads, configuration, logging, OpenFlow listener and apps are its own).
"""

import importlib
import logging
import sys

FRAMEWORK_MODULES = ("os_ken", "ryu")


def main(argv=None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] not in FRAMEWORK_MODULES:
        sys.exit(f"usage: python -m controllers.manager {'|'.join(FRAMEWORK_MODULES)} [framework options] APP...")
    framework, args = argv[0], argv[1:]
    hub = importlib.import_module(f"{framework}.lib.hub")
    hub.patch(thread=False)  # sockets and timers green before anything opens one, as the managers do
    cfg = importlib.import_module(f"{framework}.cfg")
    log = importlib.import_module(f"{framework}.log")
    log.early_init_log(logging.DEBUG)
    app_manager = importlib.import_module(f"{framework}.base.app_manager")
    importlib.import_module(f"{framework}.controller.controller")  # registers the --ofp-* options
    cfg.CONF.register_cli_opts([cfg.MultiStrOpt("app", positional=True, default=[], help="application module")])
    cfg.CONF(args=args, project=framework)
    log.init_log()
    hub.patch(thread=True)
    manager = app_manager.AppManager.get_instance()
    manager.load_apps(cfg.CONF.app)
    services = manager.instantiate_apps(**manager.create_contexts())
    try:
        hub.joinall(services)
    finally:
        manager.close()


if __name__ == "__main__":
    main()
