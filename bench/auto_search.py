"""The auto step's pick against plain dynamic, int8 and float16 on the seeded residual CNN (float .tflite).

Every model is quantized by litert-quantizer from the same float .tflite and measured the same way: bytes,
top-1 agreement with the float model on the 400 evaluation samples, latency timed interleaved with the
float model (median ratio over rounds; < 1 is faster), and the wall time it took to make and measure it
(for auto: the whole search, sensitivity analysis included, without a cache).

    python bench/auto_search.py [--min-fidelity 0.98] [--objective size balanced latency] [--max-latency-ratio 1]
"""

from __future__ import annotations

import argparse
import time

from edgecompress_contract.report import Comparison
from edgecompress_contract.spec import AutoStep, Gates, Latency
from edgecompress_runner import evaluate
from edgecompress_runner.data import Arrays
from edgecompress_runner.example import synthetic_images, trained_residual_cnn_tflite
from edgecompress_runner.search import SearchInputs, run_search
from edgecompress_runner.tfcompat import seed_run
from edgecompress_runner.tflite_quantize import calibration_samples, ptq_recipe, quantize

LATENCY = Latency(runs=100, warmup=10)


def measured(
    baseline: bytes, model: bytes, x_eval: Arrays, reference: evaluate.Quality, tasks: dict[str, str]
) -> tuple[float, float]:
    """Top-1 agreement with the float model and the latency ratio, timed interleaved with it."""
    quality = evaluate.quality(
        model,
        x_eval,
        threads=1,
        tasks=tasks,
        names_of=reference.signature,
        reference_outputs=reference.outputs,
    )
    first = {name: array[0] for name, array in x_eval.items()}
    base_stats, stats = evaluate.latency([baseline, model], first, LATENCY, names_of=reference.signature)
    comparison = Comparison.between(
        evaluate.metrics_of(baseline, base_stats, reference), evaluate.metrics_of(model, stats, quality)
    )
    return float(comparison.top1_agreement or 0.0), 1.0 / comparison.latency_speedup


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--min-fidelity", type=float, default=0.98, help="the minFidelity gate (top-1 agreement)")
    parser.add_argument("--objective", nargs="+", default=["size", "balanced", "latency"])
    parser.add_argument("--max-latency-ratio", type=float, default=None, help="the auto step's maxLatencyRatio")
    args = parser.parse_args()
    seed_run(0)
    data = synthetic_images(0)
    baseline = trained_residual_cnn_tflite(data)
    signature = evaluate.ModelRunner(baseline, 1).signature
    (image,), (probs,) = signature.inputs, signature.outputs
    x_train, x_eval = {image.name: data["x_train"][:300]}, {image.name: data["x_eval"]}
    tasks = {probs.name: "multiclass"}  # the softmax over ten classes
    reference = evaluate.quality(baseline, x_eval, threads=1, tasks=tasks, names_of=signature)
    calibration = calibration_samples(x_train, 200)
    rows = []
    for mode in ("dynamic", "int8", "float16"):
        started = time.monotonic()
        model = quantize(baseline, ptq_recipe(mode), calibration=calibration)
        agreement, latency_ratio = measured(baseline, model, x_eval, reference, tasks)
        rows.append((mode, len(model), agreement, latency_ratio, time.monotonic() - started))
    gates = Gates(min_fidelity=args.min_fidelity)
    inputs = SearchInputs(
        baseline=baseline,
        x_eval=x_eval,
        labels=None,
        tasks=tasks,
        baseline_quality=reference,
        gates=gates,
        latency=LATENCY,
        x_train=x_train,
    )
    searches = []
    for objective in args.objective:
        started = time.monotonic()
        step = AutoStep(type="auto", objective=objective, max_latency_ratio=args.max_latency_ratio)
        found = run_search(step, inputs, where="bench")
        seconds = time.monotonic() - started
        agreement, latency_ratio = measured(baseline, found.model, x_eval, reference, tasks)
        rows.append((f"auto ({objective}: {found.report.chosen})", len(found.model), agreement, latency_ratio, seconds))
        searches.append(found.report)
    print(f"float: {len(baseline):,} bytes; gate minFidelity {args.min_fidelity} (top-1 agreement)\n")
    print("| model | bytes | x float | top-1 agreement | latency ratio | wall time s |")
    print("| --- | ---: | ---: | ---: | ---: | ---: |")
    for name, size, agreement, latency_ratio, seconds in rows:
        ratio = size / len(baseline)
        print(f"| {name} | {size:,} | {ratio:.3f} | {agreement:.4f} | {latency_ratio:.2f} | {seconds:.1f} |")
    for report in searches:
        print(f"\nauto, objective {report.objective}: {report.stopped_because}")
        print("| candidate | bytes | top-1 agreement | SNR dB | latency ratio | passed | why it lost |")
        print("| --- | ---: | ---: | ---: | ---: | --- | --- |")
        for candidate in report.candidates:
            print(
                f"| {candidate.name} | {candidate.size_bytes:,} | {candidate.top1_agreement} | {candidate.snr_db} | "
                f"{candidate.latency_ratio} | {candidate.passed} | {candidate.lost_because or 'chosen'} |"
            )


if __name__ == "__main__":
    main()
