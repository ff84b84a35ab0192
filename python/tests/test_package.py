"""The package as a user and an editor see it: version, exports, docstrings, and the type stub
(_native.pyi) naming exactly what the compiled module has, with the same parameters."""
import ast
import inspect
import os
import re
import unittest

import cases
import universeg
from universeg import _native


def public(names):
    return {n for n in names if not n.startswith("_")}


def signature_names(doc):
    """Parameter names in a pybind11 docstring's first line: 'f(self: T, a: int, *, b: str = ...) -> R'."""
    params = doc.splitlines()[0].split("(", 1)[1].rsplit(")", 1)[0]
    return [m.group(1) for m in re.finditer(r"(?:^|, )(\w+):", params) if m.group(1) != "self"]


def stub_names(fn):
    args = fn.args
    return [a.arg for a in args.posonlyargs + args.args + args.kwonlyargs if a.arg != "self"]


class Package(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.dir = os.path.dirname(universeg.__file__)
        with open(os.path.join(cls.dir, "_native.pyi")) as f:
            cls.stub = ast.parse(f.read())
        cls.stub_defs = {n.name: n for n in cls.stub.body if isinstance(n, (ast.FunctionDef, ast.ClassDef))}

    def test_version_is_the_library_version(self):
        with open(os.path.join(cases.SOURCE, "include", "universeg", "version.hpp")) as f:
            version = re.search(r'#define UNIVERSEG_VERSION_STRING "([^"]+)"', f.read()).group(1)
        self.assertEqual(universeg.__version__, version)

    def test_exports(self):
        self.assertEqual(sorted(universeg.__all__), sorted(public(dir(_native))))
        for name in universeg.__all__:
            self.assertIs(getattr(universeg, name), getattr(_native, name))
        self.assertTrue(os.path.isfile(os.path.join(self.dir, "py.typed")))

    def test_docstrings(self):
        self.assertIn("model(query, support_images, support_labels)", universeg.__doc__)
        documented = [universeg.load, universeg.Model, universeg.Model.__call__]
        documented += [getattr(universeg.Model, n) for n in public(dir(universeg.Model))]
        for obj in documented:
            with self.subTest(obj=obj):
                self.assertGreater(len(inspect.getdoc(obj) or ""), 20)

    def test_stub_names_the_module(self):
        stubbed = set(self.stub_defs)
        stubbed |= {t.id for n in self.stub.body if isinstance(n, ast.AnnAssign) for t in [n.target]}
        self.assertEqual(public(stubbed) | {"__version__"}, public(dir(_native)) | {"__version__"})
        self.assertIn("__version__", stubbed)
        members = {n.name for n in self.stub_defs["Model"].body if isinstance(n, ast.FunctionDef)}
        self.assertEqual(public(members), public(dir(universeg.Model)))
        self.assertIn("__call__", members)

    def test_stub_parameters(self):
        methods = {n.name: n for n in self.stub_defs["Model"].body if isinstance(n, ast.FunctionDef)}
        for fn, stub in ((universeg.load, self.stub_defs["load"]), (universeg.Model.__call__, methods["__call__"])):
            with self.subTest(fn=fn.__name__):
                self.assertEqual(stub_names(stub), signature_names(fn.__doc__))
        self.assertEqual([a.arg for a in methods["__call__"].args.kwonlyargs], ["precision", "threads", "max_memory"])
        self.assertIn("*, precision: str = 'fp32'", universeg.Model.__call__.__doc__)


if __name__ == "__main__":
    unittest.main()
