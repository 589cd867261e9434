"""The one place that chooses between Ryu and its maintained fork os-ken.

Both expose the same API under different package names. The app must use the framework that
loaded it (:mod:`controllers.manager` imports the chosen one first), so an already imported
framework wins; otherwise os-ken is preferred because Ryu does not import on Python >= 3.10.
"""

import importlib
import sys


def _framework() -> str:
    for name in ("os_ken", "ryu"):
        if name in sys.modules:
            return name
    for name in ("os_ken", "ryu"):
        try:
            importlib.import_module(name)
        except ImportError:
            continue
        return name
    raise ImportError("neither os-ken nor Ryu is installed: run scripts/install.sh")


FRAMEWORK = _framework()

app_manager = importlib.import_module(f"{FRAMEWORK}.base.app_manager")
ofp_event = importlib.import_module(f"{FRAMEWORK}.controller.ofp_event")
handler = importlib.import_module(f"{FRAMEWORK}.controller.handler")
hub = importlib.import_module(f"{FRAMEWORK}.lib.hub")
ofproto_v1_3 = importlib.import_module(f"{FRAMEWORK}.ofproto.ofproto_v1_3")
ofproto_protocol = importlib.import_module(f"{FRAMEWORK}.ofproto.ofproto_protocol")

CONFIG_DISPATCHER = handler.CONFIG_DISPATCHER
MAIN_DISPATCHER = handler.MAIN_DISPATCHER
set_ev_cls = handler.set_ev_cls

BaseApp = getattr(app_manager, "OSKenApp", None) or app_manager.RyuApp
