"""The compiled part of pip's build (pyproject.toml): CMake builds the module universeg._native
with the interpreter that runs pip, and setuptools packages it with the Python files."""
import os
import re
import shutil
import subprocess
import sys

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def version():
    with open(os.path.join(ROOT, "include", "universeg", "version.hpp")) as f:
        return re.search(r'#define UNIVERSEG_VERSION_STRING "([^"]+)"', f.read()).group(1)


class CMakeBuild(build_ext):
    """Configures the project with only the module on (no tests, tools or install rules) and
    builds its target; CMAKE_BUILD_PARALLEL_LEVEL sets the jobs."""

    def build_extension(self, ext):
        build = os.path.abspath(os.path.join(self.build_temp, "cmake"))
        off = ["UNIVERSEG_BUILD_TESTS", "UNIVERSEG_BUILD_CLI", "UNIVERSEG_BUILD_BENCH", "UNIVERSEG_INSTALL"]
        subprocess.run(["cmake", "-S", ROOT, "-B", build, "-DCMAKE_BUILD_TYPE=Release", "-DUNIVERSEG_PYTHON=ON",
                        f"-DPython_EXECUTABLE={sys.executable}"] + [f"-D{o}=OFF" for o in off], check=True)
        subprocess.run(["cmake", "--build", build, "--target", "universeg_python"], check=True)
        target = self.get_ext_fullpath(ext.name)  # the interpreter's suffix, as CMake's module has it
        built = os.path.join(build, "python", "universeg", os.path.basename(target))
        os.makedirs(os.path.dirname(target), exist_ok=True)
        shutil.copyfile(built, target)


setup(version=version(), ext_modules=[Extension("universeg._native", sources=[])], cmdclass={"build_ext": CMakeBuild})
