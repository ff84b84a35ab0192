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

    def classes(self):
        return [n for n in self.stub_defs.values() if isinstance(n, ast.ClassDef)]

    def test_docstrings(self):
        self.assertIn("model(query, support_images, support_labels)", universeg.__doc__)
        self.assertIn("universeg.Segmenter(model,", universeg.__doc__)
        documented = [getattr(universeg, n) for n in universeg.__all__]
        for cls in (universeg.Model, universeg.Support, universeg.Segmenter, universeg.Segmentation):
            documented += [getattr(cls, n) for n in public(dir(cls)) | ({"__init__", "__call__", "__len__"} & set(vars(cls)))]
        for obj in documented:
            with self.subTest(obj=obj):
                self.assertGreater(len(inspect.getdoc(obj) or ""), 20)

    def test_stub_names_the_module(self):
        stubbed = set(self.stub_defs)
        stubbed |= {t.id for n in self.stub.body if isinstance(n, ast.AnnAssign) for t in [n.target]}
        self.assertEqual(public(stubbed) | {"__version__"}, public(dir(_native)) | {"__version__"})
        self.assertIn("__version__", stubbed)
        self.assertEqual({c.name for c in self.classes()}, {"Model", "Support", "Segmenter", "Segmentation"})
        for stub in self.classes():
            with self.subTest(cls=stub.name):
                cls = getattr(_native, stub.name)
                members = {n.name for n in stub.body if isinstance(n, ast.FunctionDef)}
                self.assertEqual(public(members), public(dir(cls)))
                # The special methods the module defines: a constructor, a call, a length.
                special = {"__init__", "__call__", "__len__"}
                defined = {n for n in special & set(vars(cls)) if "Initialize self" not in (getattr(cls, n).__doc__ or "")}
                self.assertEqual(members & special, defined)
        self.assertIn("__call__", {n.name for n in self.stub_defs["Model"].body if isinstance(n, ast.FunctionDef)})

    def test_stub_parameters(self):
        """Every function and method of the stub names the module's parameters, in order, the
        keyword-only ones after the '*'."""
        pairs = [(getattr(_native, f.name), f) for f in self.stub_defs.values() if isinstance(f, ast.FunctionDef)]
        for stub in self.classes():
            cls = getattr(_native, stub.name)
            pairs += [(getattr(cls, f.name), f) for f in stub.body
                      if isinstance(f, ast.FunctionDef) and not any(isinstance(d, ast.Name) and d.id == "property"
                                                                    for d in f.decorator_list)]
        self.assertGreaterEqual(len(pairs), 12)
        for fn, stub in pairs:
            with self.subTest(fn=fn.__qualname__ if hasattr(fn, "__qualname__") else stub.name):
                self.assertEqual(stub_names(stub), signature_names(fn.__doc__))
                first = fn.__doc__.splitlines()[0]
                keywords = signature_names("f(" + first.split("*, ", 1)[1]) if "*, " in first else []
                self.assertEqual([a.arg for a in stub.args.kwonlyargs], keywords)
        self.assertIn("*, precision: str = 'fp32'", universeg.Model.__call__.__doc__)
        self.assertIn("*, size: object = None, threshold: float = 0.5", universeg.Segmenter.__init__.__doc__)


if __name__ == "__main__":
    unittest.main()
