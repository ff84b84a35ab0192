"""universeg.Model against the official golden cases, and how it takes its inputs: dtypes,
orders, strides, copies, options, several Python threads at once."""
import re
import threading
import tracemalloc
import unittest

import numpy as np

import cases
import universeg


class GoldenCases(unittest.TestCase):
    def test_logits_match_the_official_model(self):
        for name in ("v1_b2_s4_128", "custom_b1_s3_48x80"):
            with self.subTest(case=name):
                case = cases.Golden(name)
                model = universeg.load(case.weights)
                logits = model(*case.inputs)
                c = case.config
                self.assertEqual(logits.shape, (c["B"], 1, c["H"], c["W"]))
                self.assertEqual(logits.dtype, np.float32)
                self.assertTrue(logits.flags.c_contiguous and logits.flags.writeable)
                self.assertLessEqual(float(np.abs(logits - case.arrays["logits"]).max()), case.tolerance)

    def test_properties_describe_the_architecture(self):
        for name in ("v1_b2_s4_128", "custom_b1_s3_48x80"):
            with self.subTest(case=name):
                case = cases.Golden(name)
                model = universeg.load(case.weights)
                config, count = cases.architecture(case.config["encoder_blocks"])
                self.assertEqual(model.config, config)
                self.assertEqual(model.parameter_count, count)
                self.assertEqual(model.size_multiple, 2 ** (len(case.config["encoder_blocks"]) - 1))
                self.assertEqual(model.path, case.weights)
                self.assertIsNone(model.image_size)  # a .pt checkpoint has no metadata
                self.assertEqual(model.metadata, {})
                self.assertIn(config, repr(model))

    def test_safetensors_with_metadata(self):
        model = universeg.load(cases.BUNDLED)
        self.assertEqual(model.config, "encoder [32,32,32,32] decoder [32,32,32]")
        self.assertEqual(model.image_size, (128, 128))
        self.assertEqual(model.metadata["image_size"], "128")
        self.assertEqual(model.metadata["universeg_config"], model.config)
        model.metadata.clear()  # a copy: the model's own stays
        self.assertIn("image_size", model.metadata)
        rng = np.random.default_rng(0)
        q, si = rng.random((1, 1, 64, 64), np.float32), rng.random((1, 2, 1, 64, 64), np.float32)
        sl = (si > 0.5).astype(np.float32)
        logits = model(q, si, sl)
        self.assertEqual(logits.shape, (1, 1, 64, 64))
        self.assertTrue(np.isfinite(logits).all())


class Inputs(unittest.TestCase):
    """Every form of the same values gives the same logits as C-order float32 arrays, bit for bit."""

    @classmethod
    def setUpClass(cls):
        cls.case = cases.Golden("custom_b1_s3_48x80")
        cls.model = universeg.load(cls.case.weights)
        cls.expected = cls.model(*cls.case.inputs)

    def check(self, q, si, sl):
        np.testing.assert_array_equal(self.model(q, si, sl), self.expected)

    def test_fortran_order(self):
        self.check(*(np.asfortranarray(a) for a in self.case.inputs))

    def test_float64(self):
        self.check(*(a.astype(np.float64) for a in self.case.inputs))

    def test_strided_views(self):
        def strided(a):  # every other column of an array twice as wide
            wide = np.zeros(a.shape[:-1] + (2 * a.shape[-1],), np.float32)
            wide[..., ::2] = a
            view = wide[..., ::2]
            self.assertFalse(view.flags.c_contiguous)
            return view

        self.check(*(strided(a) for a in self.case.inputs))

    def test_integer_and_bool_labels(self):
        q, si, sl = self.case.inputs
        self.check(q, si, sl.astype(np.uint8))
        self.check(q, si, sl.astype(bool))

    def test_read_only_arrays(self):
        arrays = [a.copy() for a in self.case.inputs]
        for a in arrays:
            a.setflags(write=False)
        self.check(*arrays)

    def test_objects_with_array_interface(self):
        class Tensorish:  # as a CPU torch tensor: numpy reads it through __array__
            def __init__(self, a):
                self.a = a

            def __array__(self, dtype=None):
                return self.a if dtype is None else self.a.astype(dtype)

        self.check(*(Tensorish(a) for a in self.case.inputs))

    def test_nested_lists(self):
        self.check(*(a.tolist() for a in self.case.inputs))

    def test_inputs_are_not_modified(self):
        arrays = [a.copy() for a in self.case.inputs]
        self.model(*arrays)
        for a, b in zip(arrays, self.case.inputs):
            np.testing.assert_array_equal(a, b)

    def test_c_order_float32_is_read_without_a_copy(self):
        # numpy reports its allocations to tracemalloc: a call on C-order float32 inputs allocates
        # only the logits, while Fortran-order inputs are copied (the control).
        q, si, sl = self.case.inputs
        fortran = [np.asfortranarray(a) for a in (q, si, sl)]

        def traced_peak(*args):
            tracemalloc.start()
            try:
                self.model(*args)
                return tracemalloc.get_traced_memory()[1]
            finally:
                tracemalloc.stop()

        self.assertLess(traced_peak(q, si, sl), si.nbytes)
        self.assertGreaterEqual(traced_peak(*fortran), si.nbytes + sl.nbytes)


class Options(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        # v1 at 128x128, one query: large enough that one support's buffers are megabytes.
        cls.case = cases.Golden("v1_b2_s4_128")
        cls.inputs = tuple(a[:1] for a in cls.case.inputs)
        cls.model = universeg.load(cls.case.weights)
        cls.expected = cls.model(*cls.inputs)

    def test_thread_counts_give_the_same_logits(self):
        for threads in (1, 2, 3):
            with self.subTest(threads=threads):
                np.testing.assert_array_equal(self.model(*self.inputs, threads=threads), self.expected)

    def test_memory_bound_gives_the_same_logits(self):
        # The smallest bound the model accepts (the library names it when refusing a smaller
        # one): one support at a time.
        with self.assertRaises(ValueError) as refused:
            self.model(*self.inputs, max_memory=0.5)
        needed = float(re.search(r"the ([0-9.]+) MB that this model needs", str(refused.exception)).group(1))
        np.testing.assert_array_equal(self.model(*self.inputs, max_memory=needed + 0.1), self.expected)

    def test_bf16_agrees_with_fp32_or_is_refused(self):
        try:
            low = self.model(*self.inputs, precision="bf16")
        except ValueError as e:
            self.assertIn("AVX512_BF16", str(e))
            return
        self.assertEqual(low.dtype, np.float32)
        self.assertGreaterEqual(float(np.mean((low > 0) == (self.expected > 0))), 0.995)


class Threads(unittest.TestCase):
    def test_several_python_threads_at_once(self):
        # Each thread its own inputs (the golden case, flipped or cropped), all on one model.
        case = cases.Golden("custom_b1_s3_48x80")
        model = universeg.load(case.weights)
        q, si, sl = case.inputs
        variants = [(q, si, sl), (q[..., ::-1], si[..., ::-1], sl[..., ::-1]),
                    (q[..., ::-1, :], si[..., ::-1, :], sl[..., ::-1, :]),
                    (q[..., 4:44, :], si[..., 4:44, :], sl[..., 4:44, :])]
        expected = [model(*v) for v in variants]
        results = {}
        start = threading.Barrier(len(variants))

        def run(k):
            start.wait()
            results[k] = [model(*variants[k], threads=1) for _ in range(3)]

        workers = [threading.Thread(target=run, args=(k,)) for k in range(len(variants))]
        for w in workers:
            w.start()
        for w in workers:
            w.join()
        for k, outs in results.items():
            for out in outs:
                np.testing.assert_array_equal(out, expected[k])
        self.assertEqual(len(results), len(variants))

    def test_the_forward_releases_the_gil(self):
        case = cases.Golden("v1_b2_s4_128")
        model = universeg.load(case.weights)
        q, si, sl = (a[:1] for a in case.inputs)
        si, sl = np.repeat(si, 16, axis=1), np.repeat(sl, 16, axis=1)  # v1, S=64: a long forward
        self.assertTrue(cases.gil_released(lambda: model(q, si, sl, threads=1)))


if __name__ == "__main__":
    unittest.main()
