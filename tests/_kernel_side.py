"""What tests/_kernel.py runs inside a shared notebook kernel (sent as source, never imported by
the tests themselves): a snapshot of the kernel's state once its imports are done, and a reset
to it before every notebook, so each notebook starts as it would in a kernel of its own.

Reset: the user namespace and the execution count (IPython's own reset); the working folder,
the environment, ``sys.path`` and ``sys.argv``; warning filters and every "already shown"
registry (a warning shown in one notebook is shown again in the next); the root logger and
``logging.disable``; module attributes and class attributes rebound or added by a notebook
(monkeypatches) in the course's package and the libraries a notebook would patch (open_clip,
timm, torch, torch.nn, numpy, plotly); torch's global state (grad mode, default dtype, threads,
deterministic algorithms, the default generator's state, global module hooks); numpy's error
and print options; plotly's default renderer and template; every ipywidget still open; IPython
event callbacks a notebook registered. What the kernel holds at its snapshot is frozen out of the
garbage collector's walks (``gc.freeze``): a reset's full collections walk only what notebooks
made since.
"""

import gc
import logging
import os
import sys
import warnings

# modules whose attributes (and whose classes' attributes) a notebook must not leave patched
PATCHABLE = ("helpers", "open_clip", "timm", "torch.nn", "numpy", "plotly")
PATCHABLE_TOP = ("torch",)  # the module itself only (torch has thousands of submodules)

_state = {}


def _patchable(name):
    return name in PATCHABLE_TOP or any(name == p or name.startswith(p + ".") for p in PATCHABLE)


def _classes(mod):
    for value in list(vars(mod).values()):
        if isinstance(value, type) and getattr(value, "__module__", None) == mod.__name__:
            yield value


def _module_snapshot():
    mods, classes = {}, {}
    for name, mod in list(sys.modules.items()):
        if mod is None or not _patchable(name):
            continue
        mods[name] = (mod, dict(vars(mod)))
        for cls in _classes(mod):
            classes[id(cls)] = (cls, dict(vars(cls)))
    return mods, classes


def snapshot():
    """Record the kernel's state (call once, after the imports every notebook shares)."""
    import IPython

    shell = IPython.get_ipython()
    _state["environ"] = dict(os.environ)
    _state["path"] = list(sys.path)
    _state["argv"] = list(sys.argv)
    _state["filters"] = list(warnings.filters)
    root = logging.getLogger()
    _state["logging"] = (root.level, list(root.handlers), logging.root.manager.disable)
    _state["loggers"] = {name: (lg.level, lg.disabled, lg.propagate, list(lg.handlers))
                         for name, lg in logging.root.manager.loggerDict.items() if isinstance(lg, logging.Logger)}
    _state["modules"], _state["classes"] = _module_snapshot()
    _state["events"] = {k: list(v) for k, v in shell.events.callbacks.items()}
    if "torch" in sys.modules:
        import torch
        import torch.nn.modules.module as tm

        _state["torch"] = (torch.is_grad_enabled(), torch.get_default_dtype(), torch.get_num_threads(),
                           torch.are_deterministic_algorithms_enabled(), torch.default_generator.get_state(),
                           torch.is_anomaly_enabled())
        _state["torch_hooks"] = {k: dict(v) for k, v in vars(tm).items()
                                 if k.startswith("_global_") and isinstance(v, dict)}
    if "numpy" in sys.modules:
        import numpy as np

        _state["numpy"] = (np.geterr(), np.get_printoptions())
    if "plotly.io" in sys.modules:
        import plotly.io as pio

        _state["plotly"] = (pio.renderers.default, pio.templates.default)
    # what the kernel holds now (the libraries, the snapshot) lives as long as the kernel: moved
    # out of the collector's sight, so the full collections of every reset, and a notebook's
    # own, walk only what notebooks made since (a reset took 1.35 s before, 0.36 s after)
    gc.collect()
    gc.freeze()


def _restore_dict(target_set, target_del, now, before):
    """Put back the entries of ``before`` that were rebound or deleted, remove the ones added
    (submodules imported since stay: they are the import system's, not a patch)."""
    changed = 0
    for key, value in before.items():
        if key.startswith("__") and key.endswith("__"):
            continue
        if key not in now or now[key] is not value:
            target_set(key, value)
            changed += 1
    for key in [k for k in now if k not in before]:
        if key.startswith("__") and key.endswith("__"):
            continue
        if type(now[key]).__name__ == "module":
            continue
        target_del(key)
        changed += 1
    return changed


def reset(cwd, environ=None, unset=()):
    """Back to the snapshot, then into ``cwd`` with ``environ`` set and ``unset`` removed."""
    import IPython

    shell = IPython.get_ipython()
    # widgets first, while the namespace still holds them
    if "ipywidgets" in sys.modules:
        sys.modules["ipywidgets"].Widget.close_all()
    shell.reset(new_session=True)
    for k, v in _state["events"].items():
        shell.events.callbacks[k][:] = v
    gc.collect()

    os.environ.clear()
    os.environ.update(_state["environ"])
    os.environ.update(environ or {})
    for k in unset:
        os.environ.pop(k, None)
    sys.path[:] = _state["path"]
    sys.argv[:] = _state["argv"]
    os.chdir(cwd)

    warnings.filters[:] = _state["filters"]
    warnings._filters_mutated()  # every module's "already shown" registry is void from here
    warnings.onceregistry.clear()
    level, handlers, disabled = _state["logging"]
    root = logging.getLogger()
    root.setLevel(level)
    root.handlers[:] = handlers
    logging.disable(disabled)
    for name, (lv, off, prop, hs) in _state["loggers"].items():
        lg = logging.root.manager.loggerDict.get(name)
        if isinstance(lg, logging.Logger):
            lg.setLevel(lv)
            lg.disabled, lg.propagate = off, prop
            lg.handlers[:] = hs

    patched = 0
    for mod, before in _state["modules"].values():
        d = vars(mod)
        patched += _restore_dict(d.__setitem__, d.__delitem__, dict(d), before)
    for cls, before in _state["classes"].values():
        try:
            patched += _restore_dict(lambda k, v, c=cls: setattr(c, k, v), lambda k, c=cls: delattr(c, k),
                                     dict(vars(cls)), before)
        except (TypeError, AttributeError):  # a built-in type: nothing a notebook could patch either
            pass

    if "torch" in _state:
        import torch
        import torch.nn.modules.module as tm

        grad, dtype, threads, deterministic, rng, anomaly = _state["torch"]
        torch.set_grad_enabled(grad)
        torch.set_default_dtype(dtype)
        if torch.get_num_threads() != threads:
            torch.set_num_threads(threads)
        torch.use_deterministic_algorithms(deterministic)
        torch.default_generator.set_state(rng)
        torch.set_anomaly_enabled(anomaly)
        for k, v in _state["torch_hooks"].items():
            hooks = getattr(tm, k)
            hooks.clear()
            hooks.update(v)
    if "numpy" in _state:
        import numpy as np

        err, printopts = _state["numpy"]
        np.seterr(**err)
        np.set_printoptions(**printopts)
    if "plotly" in _state:
        import plotly.io as pio

        pio.renderers.default, pio.templates.default = _state["plotly"]
    return patched
