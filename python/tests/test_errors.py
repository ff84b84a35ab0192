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


class Segmentation(unittest.TestCase):
    """Supports, Segmenters, queries and the file helpers (universeg.Support and the rest)."""

    @classmethod
    def setUpClass(cls):
        cls.model = universeg.load(cases.Golden("custom_b1_s3_48x80").weights)  # sizes multiples of 4
        rng = np.random.default_rng(0)
        cls.image = rng.random((40, 48))
        cls.labels = (cls.image > 0.5).astype(np.int32)
        cls.support = universeg.Support().add(cls.image, cls.labels)
        cls.seg = universeg.Segmenter(cls.model, cls.support, size=32, calibrate=False)

    def setUp(self):
        self.tmp = tempfile.TemporaryDirectory()
        self.addCleanup(self.tmp.cleanup)

    def raises(self, kind, message, call, *args, **options):
        with self.assertRaises(kind) as e:
            call(*args, **options)
        if kind is OSError:
            self.assertNotIsInstance(e.exception, FileNotFoundError)
        self.assertEqual(str(e.exception), message)

    def folder(self, images, labels):
        """A support folder holding these files (name: bytes) in images/ and labels/."""
        root = os.path.join(self.tmp.name, "support")
        for sub, files in (("images", images), ("labels", labels)):
            os.makedirs(os.path.join(root, sub))
            for name, data in files.items():
                with open(os.path.join(root, sub, name), "wb") as f:
                    f.write(data)
        return root

    def test_support_folders(self):
        missing = os.path.join(self.tmp.name, "missing")
        self.raises(FileNotFoundError, missing + ": support folder not found", universeg.Support, missing)
        self.raises(FileNotFoundError, missing + ": support folder not found", universeg.Segmenter, self.model, missing,
                    size=32)
        self.raises(FileNotFoundError, missing + ": support folder not found", universeg.Support().add_folder,
                    pathlib.Path(missing))
        root = self.folder({"a.png": b"junk"}, {})
        image = os.path.join(root, "images", "a.png")
        self.raises(OSError, image + ": support image has no label map (expected " +
                    os.path.join(root, "labels", "a.png") + ")", universeg.Support, root)
        with open(os.path.join(root, "labels", "a.png"), "wb") as f:
            f.write(b"junk")
        self.assertEqual(len(universeg.Support(root)), 1)  # files are read when a Segmenter is built
        self.raises(OSError, os.path.join(root, "labels", "a.png") + ": not a readable image (PNG, JPEG, BMP, TGA, "
                    "PGM/PPM): unknown format", universeg.Segmenter, self.model, root, size=32)
        # Options are checked before any file is read.
        self.raises(ValueError, "segmenter options: flips must be 1, 2 or 4, not 3", universeg.Segmenter, self.model,
                    root, size=32, flips=3)
        with self.assertRaises(TypeError):
            universeg.Segmenter(self.model, 3)

    def test_support_arrays(self):
        add = universeg.Support().add
        self.raises(ValueError, "support pair 0: image must be a 2-D image (H,W) or a 3-D volume (X,Y,Z), got shape (48,)",
                    add, self.image[0], self.labels[0])
        self.raises(ValueError, "case 7: image must be a 2-D image (H,W) or a 3-D volume (X,Y,Z), got shape "
                    "(1, 1, 40, 48)", add, self.image[None, None], self.labels[None, None], name="case 7")
        self.raises(ValueError, "support pair 0: labels must have the image's shape (40, 48), got shape (10, 48)", add,
                    self.image, self.labels[:10])
        self.raises(TypeError, "support pair 0: image must hold real numbers (a float, integer or bool array), got dtype "
                    "complex128", add, self.image.astype(complex), self.labels)
        self.raises(ValueError, "images, labels and names must have one entry per pair, got 2, 1 and no names",
                    universeg.Support.from_arrays, [self.image] * 2, [self.labels])
        self.raises(ValueError, "images, labels and names must have one entry per pair, got 1, 1 and 2",
                    universeg.Support.from_arrays, [self.image], [self.labels], names=["a", "b"])

    def test_support_label_values(self):
        def build(labels, **options):
            universeg.Segmenter(self.model, universeg.Support().add(self.image, labels, name="case 7"), size=32,
                                **options)

        self.raises(ValueError, "case 7: label value 0.500000 at row 0, column 0 is not a non-negative integer; label "
                    "maps hold integer label values", build, self.labels * 0.5 + (self.labels == 0) * 0.5)
        self.raises(ValueError, "case 7: label value -1.000000 at row 0, column 0 is not a non-negative integer; label "
                    "maps hold integer label values", build, -np.ones_like(self.labels))
        self.raises(ValueError, "the support label maps are all empty: no label to segment", build, self.labels * 0)
        self.raises(ValueError, "label value 7 does not occur in the support label maps", build, self.labels,
                    only_values=[7])
        self.raises(ValueError, "the support: no labelled examples", universeg.Segmenter, self.model, universeg.Support(),
                    size=32)

    def test_segmenter_options(self):
        def build(**options):
            universeg.Segmenter(self.model, self.support, **{"size": 32, **options})

        self.raises(ValueError, "segmenter options: model size 30x30 is not a multiple of 4, as these weights need", build,
                    size=30)
        self.raises(ValueError, "segmenter options: size 0x32 is not in [1, 4096]", build, size=(0, 32))
        self.raises(ValueError, "segmenter options: threshold must be in [0, 1]", build, threshold=1.5)
        self.raises(ValueError, "segmenter options: support size and ensemble must be positive", build, ensemble=0)
        self.raises(ValueError, "segmenter options: tile of 8 px is below the smallest for this model size, 16 px", build,
                    tile=8)
        self.raises(ValueError, "tile must be 0 (whole images), a window side in pixels or 'auto', got 'x'", build,
                    tile="x")
        self.raises(ValueError, "segmenter options: clip percentiles must satisfy 0 <= low < high <= 100", build,
                    clip=(50, 10))
        self.raises(ValueError, "segmenter options: axis must be 0, 1 or 2, not 3", build, axis=3)
        self.raises(ValueError, "max_memory must be a positive number of MiB, got 0.000000", build, max_memory=0)
        self.raises(ValueError, "threads must be at least 1, got 0", build, threads=0)
        self.raises(TypeError, "size must be an int or a pair (H, W) of ints, got (32,)", build, size=(32,))
        with self.assertRaises(TypeError):  # options are keyword-only
            universeg.Segmenter(self.model, self.support, 32)

    def test_queries(self):
        segment = self.seg.segment
        self.raises(ValueError, "query must be a 2-D image (H,W) or a 3-D volume (X,Y,Z), got shape (48,)", segment,
                    self.image[0])
        self.raises(ValueError, "query: image of 0x20 with 0 pixels", segment, np.zeros((0, 20)))
        self.raises(TypeError, "query must hold real numbers (a float, integer or bool array), got dtype <U1", segment,
                    np.array([["a"]]))
        self.raises(ValueError, "threads must be at least 1, got 0", segment, self.image, threads=0)
        missing = os.path.join(self.tmp.name, "q.png")
        self.raises(FileNotFoundError, missing + ": cannot open: No such file or directory", segment, missing)
        self.raises(FileNotFoundError, missing + ".nii.gz: cannot open: No such file or directory", segment,
                    pathlib.Path(missing + ".nii.gz"))
        with open(missing, "wb") as f:
            f.write(b"junk")
        self.raises(OSError, missing + ": not a readable image (PNG, JPEG, BMP, TGA, PGM/PPM): unknown format", segment,
                    os.fsencode(missing))

    def test_files(self):
        result = self.seg.segment(self.image)
        nii = os.path.join(self.tmp.name, "x.nii")
        self.raises(ValueError, nii + ": a 2-D label map is saved as PNG (.png)", result.save, nii)
        png = os.path.join(self.tmp.name, "y.png")
        self.raises(ValueError, png + ": a label volume is saved as NIfTI (.nii or .nii.gz)", universeg.save_labels, png,
                    self.labels[..., None])
        with self.assertRaises(FileNotFoundError) as e:
            result.save(os.path.join(self.tmp.name, "missing", "x.png"))
        self.assertTrue(str(e.exception).startswith(os.path.join(self.tmp.name, "missing", "x.png") + ": cannot create"))
        self.raises(ValueError, "labels: the value 0.500000 at (0, 0) is not an integer in [0, 65535]",
                    universeg.save_labels, png, np.full((2, 3), 0.5))
        self.raises(ValueError, "labels: the value 70000.000000 at (1, 2) is not an integer in [0, 65535]",
                    universeg.save_labels, png, np.array([[0, 1, 2], [3, 4, 70000]]))
        self.assertFalse(os.path.exists(png))
        missing = os.path.join(self.tmp.name, "missing.png")
        self.raises(FileNotFoundError, missing + ": cannot open: No such file or directory", universeg.load_image, missing)
        jpeg = os.path.join(cases.SOURCE, "fuzz", "corpus", "image", "grey100.jpg")
        self.raises(OSError, jpeg + ": label maps must be stored losslessly (PNG, BMP, TGA, PGM), not as JPEG",
                    universeg.load_label_map, jpeg)
        self.assertEqual(universeg.load_image(jpeg).ndim, 2)  # as an image it is fine


if __name__ == "__main__":
    unittest.main()
