# Set-up: works as-is locally and on Binder. In Colab it fetches the course at the version this
# notebook was built from and installs what Colab lacks, keeping Colab's own torch and ipywidgets
# (helpers.course.colab); run again, it does nothing. COURSE_REPO / COURSE_DIR in the environment
# point it at another copy of the repository / another folder.
import os
import shutil
import subprocess
import sys
import time

if "google.colab" in sys.modules:
    _t0, _dir = time.time(), os.environ.get("COURSE_DIR", "/content/course")
    if not os.path.isdir(os.path.join(_dir, "helpers")):  # cloned aside, then moved: never half a clone
        _repo, _part = os.environ.get("COURSE_REPO", "https://github.com/{{REPO}}"), _dir + ".part"
        shutil.rmtree(_part, ignore_errors=True)
        if subprocess.run(["git", "clone", "-q", "--depth", "1", "--branch", "{{REF}}", _repo, _part],
                          capture_output=True).returncode:  # a version not tagged yet: the default branch
            subprocess.run(["git", "clone", "-q", "--depth", "1", _repo, _part], check=True)
        os.replace(_part, _dir)
    if _dir not in sys.path:
        sys.path.insert(0, _dir)
    from helpers.course.colab import set_up

    set_up(_dir, expected="{{REF}}", started=_t0)
    os.chdir(os.path.join(_dir, "notebooks"))
from helpers.course.ui import setup_plotting

setup_plotting()
