"""Build hook (the project's metadata lives in pyproject.toml).

A wheel carries the repository's ``data/`` folder (the offline default's weights, its config and
training log, the text pools) as ``helpers/course_data/``, where :func:`helpers.engine.paths.data_dir`
finds it in an install that is not a clone. An editable install reads ``data/`` in place.
"""

import os

from setuptools import setup
from setuptools.command.build_py import build_py

DATA = "data"
SHIPPED = os.path.join("helpers", "course_data")  # helpers.engine.paths.SHIPPED_DATA


class build_py_with_data(build_py):
    """``build_py``, then the repository's ``data/`` copied into the built package."""

    def run(self):
        super().run()
        if not self.editable_mode:
            self.copy_tree(DATA, os.path.join(self.build_lib, SHIPPED))


setup(cmdclass={"build_py": build_py_with_data})
