# Set-up: works as-is locally, on Binder and in Colab (where it fetches the course first).
import os
import subprocess
import sys

if "google.colab" in sys.modules:
    if not os.path.exists("/content/course"):
        subprocess.run(["git", "clone", "--depth", "1", "https://github.com/{{REPO}}", "/content/course"], check=True)
        subprocess.run([sys.executable, "-m", "pip", "install", "-q", "-r", "/content/course/binder/requirements-colab.txt",
                        "-e", "/content/course"], check=True)
    sys.path.insert(0, "/content/course")
    os.chdir("/content/course/notebooks")
    from google.colab import output
    output.enable_custom_widget_manager()
from helpers.course.ui import setup_plotting

setup_plotting()
