"""universeg.Segmenter against `universeg segment`: label map files byte for byte and the same
probabilities as those of the program built beside the module (the bundled weights on the
example cells: images and a volume, as files and as arrays) and as its reference outputs in
tests/data/segment (every option, NIfTI supports and queries); supports from arrays as from
folders; the file helpers; several Python threads; the GIL released. Errors: test_errors.py.

A subset of the example cells and one mirrored view (flips=1, --flips 1) keep it fast."""
import gzip
import os
import re
import shutil
import struct
import subprocess
import tempfile
import threading
import unittest

import numpy as np

import cases
import universeg

SUPPORT_NAMES = ["cell_%02d" % k for k in range(6)]  # 6 examples: enough to calibrate (4)
QUERY_NAMES = ["query_00", "query_01"]


def nnunet_folder(root, images, labels):
    """root/images/NAME and root/labels/NAME for the files given (copied, or written by a function)."""
    for sub, files in (("images", images), ("labels", labels)):
        os.makedirs(os.path.join(root, sub))
        for name, source in files.items():
            target = os.path.join(root, sub, name)
            source(target) if callable(source) else shutil.copyfile(source, target)
    return root


SROW = [[0.5, 0, 0, -10], [0, 0.5, 0, 20], [0, 0, 2, 5]]  # an affine, which outputs must keep


def write_nifti(path, volume, code=16, dtype="<f4"):
    """A NIfTI-1 file of an (X,Y,Z) array: float32 by default (code 16), uint8 with code 2."""
    header = bytearray(352)
    struct.pack_into("<i", header, 0, 348)
    struct.pack_into("<8h", header, 40, 3, *volume.shape, 1, 1, 1, 1)
    struct.pack_into("<2h", header, 70, code, 8 * np.dtype(dtype).itemsize)
    struct.pack_into("<4f", header, 76, 1, 0.5, 0.5, 2)  # qfac, voxel sizes
    struct.pack_into("<2f", header, 108, 352, 1)  # vox_offset, scl_slope
    struct.pack_into("<h", header, 254, 1)  # sform_code
    struct.pack_into("<12f", header, 280, *[v for row in SROW for v in row])
    header[344:348] = b"n+1\0"
    with open(path, "wb") as f:
        f.write(bytes(header) + np.asarray(volume, dtype).tobytes(order="F"))


def read_nifti(path):
    """A NIfTI-1 file's voxels (.nii, or .nii.gz) as an (X,Y,Z) array, and its srow rows."""
    with (gzip.open if path.endswith(".gz") else open)(path, "rb") as f:
        data = f.read()
    dims = struct.unpack_from("<8h", data, 40)
    dtype = {2: "u1", 4: "<i2", 8: "<i4", 16: "<f4"}[struct.unpack_from("<h", data, 70)[0]]
    offset = int(struct.unpack_from("<f", data, 108)[0])
    shape = dims[1:1 + dims[0]]
    voxels = np.frombuffer(data, dtype, int(np.prod(shape)), offset).reshape(shape, order="F")
    return voxels, np.array(struct.unpack_from("<12f", data, 280), np.float32).reshape(3, 4)


def stack_slices(images, height, width):
    """A volume (X,Y,Z) whose slices along axis 2 are the images cropped to height x width: a
    slice's rows are y and its columns x, as the library slices a volume."""
    return np.stack([np.asarray(a)[:height, :width].T for a in images], axis=2)


def read(path):
    with open(path, "rb") as f:
        return f.read()


def Segmenter(model, support, **options):
    """universeg.Segmenter with one OpenMP thread unless told otherwise, as the C++ tests run
    these small forward passes: on a loaded machine, waiting for threads costs far more than the
    work. Results do not depend on the thread count (Threads.test_thread_counts)."""
    return universeg.Segmenter(model, support, **{"threads": 1, **options})


# Set by setUpModule: a temporary folder, the files in it and the tests share, the bundled
# model, and a Segmenter of the support with one view.
DATA, DATA_FILES, MODEL, SEG = None, {}, None, None


def setUpModule():
    global DATA, MODEL, SEG
    DATA = tempfile.mkdtemp(prefix="universeg-python-")
    cells = cases.CELLS
    DATA_FILES.update(
        support=nnunet_folder(os.path.join(DATA, "support"),
                              {n + ".png": os.path.join(cells, "support", "images", n + ".png") for n in SUPPORT_NAMES},
                              {n + ".png": os.path.join(cells, "support", "labels", n + ".png") for n in SUPPORT_NAMES}),
        queries=[os.path.join(cells, "queries", "images", n + ".png") for n in QUERY_NAMES],
        volume=os.path.join(DATA, "volume.nii"))
    # Three queries as the slices of one volume (the smallest query is 120 rows by 136 columns).
    write_nifti(DATA_FILES["volume"], stack_slices(
        [universeg.load_image(os.path.join(cells, "queries", "images", "query_%02d.png" % k)) for k in range(3)], 120, 136))
    MODEL = universeg.load(cases.BUNDLED)
    SEG = Segmenter(MODEL, DATA_FILES["support"], flips=1)


def tearDownModule():
    shutil.rmtree(DATA)


def run_cli(out, *options, probabilities=True, volume=True):
    """`universeg segment` on the support, the queries and the volume, writing into `out`."""
    args = [cases.CLI, "segment", "--support", DATA_FILES["support"], "--out", out, "--weights", cases.BUNDLED,
            "--quiet", "--threads", "1"] + list(options) + (["--probabilities", "npy"] if probabilities else [])
    queries = DATA_FILES["queries"] + ([DATA_FILES["volume"]] if volume else [])
    subprocess.run(args + queries, check=True, stdout=subprocess.DEVNULL)


@unittest.skipUnless(cases.CLI, "the build has no `universeg` program (UNIVERSEG_BUILD_CLI=OFF)")
class AgainstTheCli(unittest.TestCase):
    """The module's results equal the files `universeg segment` writes with the same options."""

    def setUp(self):
        self.tmp = tempfile.TemporaryDirectory()
        self.addCleanup(self.tmp.cleanup)
        self.assertTrue(os.path.isfile(cases.CLI), cases.CLI + " is not built: cmake --build BUILD --target universeg_cli")

    def path(self, name):
        return os.path.join(self.tmp.name, name)

    def check_images(self, seg, out):
        for query in DATA_FILES["queries"]:
            name = os.path.splitext(os.path.basename(query))[0]
            with self.subTest(query=name):
                result = seg.segment(query)
                cli = os.path.join(out, name + ".png")
                result.save(self.path(name + ".png"))
                self.assertEqual(read(self.path(name + ".png")), read(cli))
                np.testing.assert_array_equal(result.labels, universeg.load_label_map(cli))
                self.assertEqual(result.labels.shape, universeg.load_image(query).shape)
                for i, value in enumerate(result.values):
                    np.testing.assert_array_equal(result.probabilities[i],
                                                  np.load(os.path.join(out, "%s_prob_%d.npy" % (name, value))))
                # The same query as an array: float64 in Fortran order converts to the same pixels.
                image = np.asfortranarray(universeg.load_image(query), np.float64)
                again = seg.segment(image)
                np.testing.assert_array_equal(again.labels, result.labels)
                np.testing.assert_array_equal(again.probabilities, result.probabilities)

    def test_default_options(self):
        out = self.path("out")
        run_cli(out, "--flips", "1")
        self.assertEqual(SEG.values, [1, 2])
        self.assertIsNotNone(SEG.calibration)  # 6 examples: calibrated, as the CLI
        self.assertEqual(sorted(SEG.calibration["regions"]), SEG.values)
        for chosen in SEG.calibration["regions"].values():
            self.assertLessEqual(set(chosen), {"largest", "filled"})
        self.assertFalse(SEG.calibration["colour"])  # grey examples
        self.assertEqual(SEG.calibration["types"], [])  # 6 examples: too few for two types of 4
        self.check_images(SEG, out)

        # The volume, as a file: the same NIfTI bytes (the query's header kept) and probabilities.
        result = SEG.segment(DATA_FILES["volume"])
        result.save(self.path("volume.nii"))
        self.assertEqual(read(self.path("volume.nii")), read(os.path.join(out, "volume.nii")))
        labels, srow = read_nifti(os.path.join(out, "volume.nii"))
        np.testing.assert_array_equal(srow, np.array(SROW, np.float32))
        self.assertEqual(result.labels.shape, (136, 120, 3))
        np.testing.assert_array_equal(result.labels, labels)
        self.assertEqual(result.probabilities.shape, (2, 136, 120, 3))
        for i, value in enumerate(result.values):
            np.testing.assert_array_equal(result.probabilities[i], read_nifti(os.path.join(out, "volume_prob_%d.nii" % value))[0])

        # The volume as an (X,Y,Z) array, indexed [x, y, z]: the same labels.
        volume = read_nifti(DATA_FILES["volume"])[0]
        np.testing.assert_array_equal(SEG.segment(volume).labels, labels)
        np.testing.assert_array_equal(SEG.segment(np.ascontiguousarray(volume)).labels, labels)

    def test_other_options(self):
        out = self.path("out")
        run_cli(out, "--flips", "2", "--no-calibration", "--threshold", "0.6", "--clip", "1,99", "--label", "2", "--size",
                "64", "--support-size", "3", "--ensemble", "2", "--seed", "5", "--tile", "64", volume=False)
        seg = Segmenter(MODEL, DATA_FILES["support"], flips=2, calibrate=False, threshold=0.6, clip=(1, 99),
                        only_values=[2], size=64, support_size=3, ensemble=2, seed=5, tile=64)
        self.assertEqual((seg.values, seg.size, seg.tile, seg.calibration), ([2], (64, 64), 64, None))
        self.check_images(seg, out)

    def test_histogram_baseline(self):
        out = self.path("out")
        run_cli(out, "--histogram-baseline", probabilities=False)
        seg = Segmenter(MODEL, DATA_FILES["support"], histogram_baseline=True)
        for query in DATA_FILES["queries"]:
            result = seg.segment(query)
            self.assertIsNone(result.probabilities)
            name = os.path.basename(query)
            result.save(self.path(name))
            self.assertEqual(read(self.path(name)), read(os.path.join(out, name)))


def reference_case(args):
    """A line of tests/data/segment/cases.txt (`universeg segment` arguments) as the weights, the
    support folder, the queries and Segmenter options, read independently of the command."""
    flags = {"--threshold": ("threshold", float), "--ensemble": ("ensemble", int), "--support-size": ("support_size", int),
             "--seed": ("seed", int), "--flips": ("flips", int), "--axis": ("axis", int), "--size": ("size", int),
             "--label": ("only_values", lambda v: [int(v)]), "--tile": ("tile", lambda v: v if v == "auto" else int(v)),
             "--clip": ("clip", lambda v: tuple(float(x) for x in v.split(",")))}
    weights, support, queries, options = None, None, [], {}
    words = iter(args)
    for word in words:
        if word in flags:
            key, parse = flags[word]
            options[key] = parse(next(words))
        elif word in ("--weights", "--support"):
            path = os.path.join(cases.SOURCE, next(words))
            weights, support = (path, support) if word == "--weights" else (weights, path)
        elif word == "--probabilities":
            next(words)  # the command's file format; the module returns them all
        elif word == "--histogram-baseline":
            options["histogram_baseline"] = True
        elif word == "--no-calibration":
            options["calibrate"] = False
        elif word != "--overlay":  # overlays are the command's own
            queries.append(os.path.join(cases.SOURCE, word))
    return weights, support, queries, options


class AgainstTheReference(unittest.TestCase):
    """The cases of tests/data/segment/cases.txt through the module, each case's first query:
    label maps saved byte for byte as the reference files that `universeg segment` wrote
    (tests/data/segment/README.md), probabilities as the values of its probability files. Float
    probabilities are compared to 1e-6, as tests/test_segment.cpp does: the engine's schedule
    has since moved some logits by one float step. The cells case (the bundled weights) is
    AgainstTheCli's."""

    def test_reference_cases(self):
        data = os.path.join(cases.SOURCE, "tests", "data", "segment")
        with open(os.path.join(data, "cases.txt")) as f:
            lines = [line.split() for line in f if line.strip() and not line.startswith("#")]
        self.assertGreaterEqual(len(lines), 8)
        with tempfile.TemporaryDirectory() as tmp:
            for name, *args in lines:
                if name == "cells":
                    continue
                weights, support, queries, options = reference_case(args)
                stem, ext = re.match(r"(.*?)(\.nii\.gz|\.nii|\.png)$", os.path.basename(queries[0])).groups()
                reference = os.path.join(data, "reference", name)
                with self.subTest(case=name):
                    seg = Segmenter(universeg.load(weights), support, **options)
                    self.assertEqual(seg.size, (options["size"],) * 2)
                    self.assertEqual(seg.values, options.get("only_values", [1, 2]))
                    self.assertEqual(seg.calibration is None,
                                     not options.get("calibrate", True) or options.get("histogram_baseline", False))
                    if options.get("tile", "auto") != "auto":
                        self.assertEqual(seg.tile, options["tile"])
                    result = seg.segment(queries[0])
                    compared = {stem + ext}
                    result.save(os.path.join(tmp, name + ext))
                    self.assertEqual(read(os.path.join(tmp, name + ext)), read(os.path.join(reference, stem + ext)))
                    for i, value in enumerate(result.values):
                        prob = "%s_prob_%d%s" % (stem, value, ext)
                        if not os.path.exists(os.path.join(reference, prob)):
                            continue
                        compared.add(prob)
                        if ext == ".png":  # 16-bit: the probability rounded to a multiple of 1/65535
                            expected, atol = universeg.load_image(os.path.join(reference, prob)), 0.5 / 65535 + 1e-7
                        else:
                            expected, atol = read_nifti(os.path.join(reference, prob))[0], 1e-6
                        np.testing.assert_allclose(result.probabilities[i], expected, rtol=0, atol=atol)
                    # Every label map and probability file the command wrote for the query was compared.
                    written = {f for f in os.listdir(reference) if re.match(re.escape(stem) + r"(\.|_prob_)", f)}
                    self.assertEqual(compared, written)


class Supports(unittest.TestCase):
    """A support from arrays segments as the same support from files."""

    def assert_same(self, a, b):
        np.testing.assert_array_equal(a.labels, b.labels)
        self.assertEqual(a.values, b.values)
        if a.probabilities is None:
            self.assertIsNone(b.probabilities)
        else:
            np.testing.assert_array_equal(a.probabilities, b.probabilities)

    def test_arrays_as_the_folder(self):
        folder = DATA_FILES["support"]
        images = [universeg.load_image(os.path.join(folder, "images", n + ".png")) for n in SUPPORT_NAMES]
        labels = [universeg.load_label_map(os.path.join(folder, "labels", n + ".png")) for n in SUPPORT_NAMES]
        support = universeg.Support.from_arrays(images, labels, names=SUPPORT_NAMES)
        self.assertEqual((len(support), support.files), (6, []))
        seg = Segmenter(MODEL, support, flips=1)
        self.assertEqual(seg.calibration, SEG.calibration)
        for query in DATA_FILES["queries"]:
            self.assert_same(seg.segment(query), SEG.segment(query))

    def test_volumes_as_the_nifti_folder(self):
        # Two volumes of three support images each (cropped to 120x120), as NIfTI files and as arrays.
        cells = os.path.join(cases.CELLS, "support")
        volumes = [stack_slices([universeg.load_image(os.path.join(cells, "images", n + ".png")) for n in names], 120, 120)
                   for names in (SUPPORT_NAMES[:3], SUPPORT_NAMES[3:])]
        labels = [stack_slices([universeg.load_label_map(os.path.join(cells, "labels", n + ".png")) for n in names], 120, 120)
                  for names in (SUPPORT_NAMES[:3], SUPPORT_NAMES[3:])]
        folder = nnunet_folder(
            os.path.join(DATA, "volumes"),
            {"v%d.nii" % k: lambda p, v=v: write_nifti(p, v) for k, v in enumerate(volumes)},
            {"v%d.nii" % k: lambda p, v=v: write_nifti(p, v, 2, "u1") for k, v in enumerate(labels)})
        from_files = Segmenter(MODEL, folder, flips=1)
        from_arrays = Segmenter(MODEL, universeg.Support.from_arrays(volumes, [l.astype(np.int64) for l in labels]),
                                          flips=1)
        self.assertEqual(from_files.examples, 6)  # every slice holds a label
        self.assertEqual(from_arrays.calibration, from_files.calibration)
        query = DATA_FILES["queries"][0]
        self.assert_same(from_arrays.segment(query), from_files.segment(query))

    def test_label_dtypes(self):
        rng = np.random.default_rng(1)
        image = rng.random((40, 48))
        labels = (image > 0.6).astype(np.int32) + (image > 0.8)
        query = rng.random((50, 30))
        expected = Segmenter(MODEL, universeg.Support().add(image, labels), calibrate=False).segment(query)
        for dtype in (np.uint8, np.int64, np.float64, np.float32):
            with self.subTest(dtype=dtype):
                support = universeg.Support().add(image, labels.astype(dtype))
                self.assert_same(Segmenter(MODEL, support, calibrate=False).segment(query), expected)

    def test_adding(self):
        support = universeg.Support()
        self.assertIs(support.add_folder(DATA_FILES["support"]), support)
        image = universeg.load_image(DATA_FILES["queries"][0])
        self.assertIs(support.add(image, image > 0.5, name="extra"), support)
        self.assertEqual(len(support), 7)
        self.assertEqual(len(support.files), 12)
        self.assertEqual(support.files[0], os.path.join(DATA_FILES["support"], "images", "cell_00.png"))
        self.assertEqual(len(universeg.Support(DATA_FILES["support"]).add_folder(DATA_FILES["support"])), 12)

    def test_options_that_drop_probabilities(self):
        query = DATA_FILES["queries"][0]
        seg = Segmenter(MODEL, DATA_FILES["support"], flips=1, keep_probabilities=False)
        result = seg.segment(query)
        self.assertIsNone(result.probabilities)
        np.testing.assert_array_equal(result.labels, SEG.segment(query).labels)


class Helpers(unittest.TestCase):
    def setUp(self):
        self.tmp = tempfile.TemporaryDirectory()
        self.addCleanup(self.tmp.cleanup)

    def test_load_image_and_label_map(self):
        path = os.path.join(cases.CELLS, "support", "labels", "cell_00.png")
        width, height = struct.unpack(">2I", read(path)[16:24])  # the PNG's IHDR
        labels = universeg.load_label_map(path)
        self.assertEqual((labels.dtype, labels.shape), (np.int32, (height, width)))
        self.assertEqual(set(np.unique(labels)), {0, 1, 2})
        image = universeg.load_image(path)  # the same 8-bit file as an image: its samples / 255
        self.assertEqual((image.dtype, image.shape), (np.float32, (height, width)))
        np.testing.assert_array_equal(image, (labels * (1 / 255.0)).astype(np.float32))

    def test_save_labels(self):
        labels = np.arange(12, dtype=np.int64).reshape(3, 4)
        for top, depth in ((255, 8), (300, 16)):
            with self.subTest(top=top):
                labels[0, 0] = top
                path = os.path.join(self.tmp.name, "labels.png")
                universeg.save_labels(path, labels)
                self.assertEqual(read(path)[24], depth)  # the IHDR's bit depth
                np.testing.assert_array_equal(universeg.load_label_map(path), labels)
        volume = np.arange(24, dtype=np.uint16).reshape(2, 3, 4) * 20  # up to 460: int16
        path = os.path.join(self.tmp.name, "labels.nii")
        universeg.save_labels(path, volume)
        saved = read_nifti(path)[0]
        self.assertEqual(saved.dtype, np.dtype("<i2"))
        np.testing.assert_array_equal(saved, volume)


class Threads(unittest.TestCase):
    def test_several_python_threads_at_once(self):
        queries = [universeg.load_image(q) for q in DATA_FILES["queries"]] + [read_nifti(DATA_FILES["volume"])[0]]
        expected = [SEG.segment(q) for q in queries]
        results = {}
        start = threading.Barrier(len(queries))

        def run(k):
            start.wait()
            results[k] = [SEG.segment(queries[k], threads=1) for _ in range(2)]

        workers = [threading.Thread(target=run, args=(k,)) for k in range(len(queries))]
        for w in workers:
            w.start()
        for w in workers:
            w.join()
        self.assertEqual(len(results), len(queries))
        for k, outs in results.items():
            for out in outs:
                np.testing.assert_array_equal(out.labels, expected[k].labels)
                np.testing.assert_array_equal(out.probabilities, expected[k].probabilities)

    def test_thread_counts(self):
        query = DATA_FILES["queries"][0]
        expected = SEG.segment(query)
        for threads in (2, None):
            with self.subTest(threads=threads):
                result = SEG.segment(query, threads=threads)
                np.testing.assert_array_equal(result.labels, expected.labels)
                np.testing.assert_array_equal(result.probabilities, expected.probabilities)
        seg = universeg.Segmenter(MODEL, DATA_FILES["support"], flips=1, threads=2)
        self.assertEqual(seg.calibration, SEG.calibration)

    def test_calibration_releases_the_gil(self):
        self.assertTrue(cases.gil_released(lambda: universeg.Segmenter(MODEL, DATA_FILES["support"], flips=1, threads=1)))

    def test_segmentation_releases_the_gil(self):
        # An array query of fewer than 500 pixels: numpy converts it without releasing the GIL.
        query = universeg.load_image(DATA_FILES["queries"][0])[:16, :16]
        self.assertTrue(cases.gil_released(lambda: SEG.segment(query, threads=1)))

    def test_a_thread_that_holds_the_gil(self):
        self.assertFalse(cases.gil_released(lambda: sum(range(3000000))))  # the method can tell


if __name__ == "__main__":
    unittest.main()
