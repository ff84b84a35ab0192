// ONNX Runtime's side of bench/compare.py: time an exported UniverSeg model.
//
//   NODE_PATH=/path/to/node_modules node bench/ort_bench.js MODEL.onnx S SIZE BATCH REPEATS THREADS
//
// One warm-up run, then REPEATS timed runs; prints one JSON line
// {"median_ms", "min_ms", "peak_rss_mb", ...}. Inputs: images uniform in [0,1), labels 0/1 with
// probability 0.3 (the distribution `universeg bench` uses; timing does not depend on values).
const ort = require('onnxruntime-node');

// VmHWM: this program's own peak (maxRSS survives exec and may report the parent's).
function peakRssMb() {
  try {
    const m = require('fs').readFileSync('/proc/self/status', 'utf8').match(/VmHWM:\s+(\d+)/);
    if (m) return Number(m[1]) / 1024;
  } catch (e) { /* not Linux */ }
  return process.resourceUsage().maxRSS / 1024;
}

async function main() {
  const [model, s, size, batch, repeats, threads] = process.argv.slice(2);
  const S = Number(s), H = Number(size), B = Number(batch), R = Number(repeats), T = Number(threads);
  const session = await ort.InferenceSession.create(model, {
    intraOpNumThreads: T,
    interOpNumThreads: 1,
    executionMode: 'sequential',
    graphOptimizationLevel: 'all',
  });
  const fill = (n, f) => { const a = new Float32Array(n); for (let i = 0; i < n; ++i) a[i] = f(); return a; };
  const feeds = {
    query: new ort.Tensor('float32', fill(B * H * H, Math.random), [B, 1, H, H]),
    support_images: new ort.Tensor('float32', fill(B * S * H * H, Math.random), [B, S, 1, H, H]),
    support_labels: new ort.Tensor('float32', fill(B * S * H * H, () => (Math.random() < 0.3 ? 1 : 0)), [B, S, 1, H, H]),
  };
  await session.run(feeds);
  const times = [];
  for (let i = 0; i < R; ++i) {
    const t0 = process.hrtime.bigint();
    await session.run(feeds);
    times.push(Number(process.hrtime.bigint() - t0) / 1e6);
  }
  times.sort((a, b) => a - b);
  const n = times.length;
  const median = n % 2 ? times[(n - 1) / 2] : 0.5 * (times[n / 2 - 1] + times[n / 2]);
  console.log(JSON.stringify({
    median_ms: median, min_ms: times[0], peak_rss_mb: peakRssMb(),
    support_size: S, threads: T, onnxruntime: require('onnxruntime-node/package.json').version,
  }));
}

main().catch((e) => { console.error(e.message || e); process.exit(1); });
