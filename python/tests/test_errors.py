"""The exceptions universeg raises: their types (OSError for files, ValueError for shapes and
values, TypeError for what is not numbers) and the library's messages naming the fault."""
import os
import pathlib
import tempfile
import unittest

import numpy as np

import cases
import universeg


class Loading(unittest.TestCase):
    def setUp(self):
        self.tmp = tempfile.TemporaryDirectory()
        self.addCleanup(self.tmp.cleanup)

    def test_missing_file(self):
        path = os.path.join(self.tmp.name, "missing.pt")
        with self.assertRaises(FileNotFoundError) as e:
            universeg.load(path)
        self.assertEqual(str(e.exception), path + ": cannot open: No such file or directory")

    def test_not_a_weights_file(self):
        path = os.path.join(cases.GOLDEN, "v1_b2_s4_128", "query.npy")
        with self.assertRaises(OSError) as e:
            universeg.load(path)
        self.assertNotIsInstance(e.exception, FileNotFoundError)
        self.assertEqual(str(e.exception), path + ": not a PyTorch checkpoint or safetensors file")

    def test_directory(self):
        with self.assertRaises(OSError) as e:
            universeg.load(self.tmp.name)
        self.assertIn("is a directory", str(e.exception))

    def test_truncated_checkpoint(self):
        with open(cases.Golden("custom_b1_s3_48x80").weights, "rb") as f:
            data = f.read()
        path = os.path.join(self.tmp.name, "truncated.pt")
        with open(path, "wb") as f:
            f.write(data[: len(data) // 2])
        with self.assertRaises(OSError) as e:
            universeg.load(path)
        self.assertTrue(str(e.exception).startswith(path + ": "), str(e.exception))

    def test_safetensors_without_a_model(self):
        header = b'{"x": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}}'
        path = os.path.join(self.tmp.name, "other.safetensors")
        with open(path, "wb") as f:
            f.write(len(header).to_bytes(8, "little") + header + b"\0\0\0\0")
        with self.assertRaises(OSError) as e:
            universeg.load(path)
        self.assertTrue(str(e.exception).startswith(path + ": "), str(e.exception))

    def test_path_types(self):
        weights = cases.Golden("custom_b1_s3_48x80").weights
        for path in (pathlib.Path(weights), os.fsencode(weights)):
            with self.subTest(path=path):
                self.assertEqual(universeg.load(path).path, weights)
        with self.assertRaises(TypeError):
            universeg.load(3)

    def test_no_constructor(self):
        with self.assertRaises(TypeError):
            universeg.Model()


class Calls(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.case = cases.Golden("custom_b1_s3_48x80")  # B=1, S=3, 48x80, sizes multiples of 4
        cls.model = universeg.load(cls.case.weights)

    def raises(self, kind, message, *args, **options):
        with self.assertRaises(kind) as e:
            self.model(*(args or self.case.inputs), **options)
        self.assertIn(message, str(e.exception))
        return e.exception

    def test_shapes(self):
        q, si, sl = self.case.inputs
        self.raises(ValueError, "query must be (B,1,H,W), got shape (1, 48, 80)", q[0], si, sl)
        self.raises(ValueError, "query must be (B,1,H,W), got shape (1, 2, 48, 80)", np.concatenate([q, q], 1), si, sl)
        self.raises(ValueError, "support_images must be (B,S,1,H,W) with the query's B, H and W (1, S, 1, 48, 80), "
                    "got shape (3, 1, 48, 80)", q, si[0], sl)
        self.raises(ValueError, "support_images must be (B,S,1,H,W) with the query's B, H and W (1, S, 1, 48, 80), "
                    "got shape (2, 3, 1, 48, 80)", q, np.concatenate([si, si]), sl)
        self.raises(ValueError, "(1, S, 1, 48, 80), got shape (1, 3, 1, 48, 40)", q, si[..., :40], sl)
        self.raises(ValueError, "support_labels must have the shape of support_images (1, 3, 1, 48, 80), "
                    "got shape (1, 2, 1, 48, 80)", q, si, sl[:, :2])

    def test_sizes(self):
        q, si, sl = self.case.inputs
        self.raises(ValueError, "image size 46x80 is not a positive multiple of 4", q[..., :46, :],
                    si[..., :46, :], sl[..., :46, :])
        self.raises(ValueError, "support size must be at least 1", q, si[:, :0], sl[:, :0])
        self.raises(ValueError, "batch size must be at least 1", q[:0], si[:0], sl[:0])

    def test_values(self):
        q, si, sl = self.case.inputs
        bad = q.copy()
        bad[0, 0, 1, 2] = np.nan
        self.raises(ValueError, "query holds a non-finite value at index 82", bad, si, sl)
        huge = sl.astype(np.float64)
        huge[0, 0, 0, 0, 0] = 1e39  # beyond float32: infinite once converted
        self.raises(ValueError, "support labels holds a non-finite value at index 0", q, si, huge)

    def test_dtypes(self):
        q, si, sl = self.case.inputs
        self.raises(TypeError, "support_images must hold real numbers (a float, integer or bool array), got dtype "
                    "complex64", q, si.astype(np.complex64), sl)
        self.raises(TypeError, "query must hold real numbers", q.astype(str), si, sl)
        self.raises(TypeError, "support_labels must hold real numbers", q, si, sl.astype(object))
        e = self.raises(ValueError, "support_images: setting an array element with a sequence", q, [[1.0], [1.0, 2.0]],
                        sl)
        self.assertIsInstance(e.__cause__, ValueError)  # numpy's own error, chained

    def test_options(self):
        self.raises(ValueError, "precision must be 'fp32' or 'bf16', got 'fp16'", precision="fp16")
        self.raises(ValueError, "threads must be at least 1, got 0", threads=0)
        self.raises(ValueError, "max_memory must be a positive number of MiB", max_memory=-1)
        self.raises(ValueError, "max_memory must be a positive number of MiB", max_memory=float("nan"))
        self.raises(ValueError, "a memory bound of 0.0 MB is below the", max_memory=0.01)
        with self.assertRaises(TypeError):
            self.model(*self.case.inputs, threads="2")
        with self.assertRaises(TypeError):  # options are keyword-only
            self.model(*self.case.inputs, "fp32")
        with self.assertRaises(TypeError):
            self.model(*self.case.inputs[:2])


if __name__ == "__main__":
    unittest.main()
