"""Human-readable text for the terminal: model info at the start, a summary table at the end."""

from __future__ import annotations


def format_model_info(info: dict) -> str:
    """One block describing the built model (parameters, layers, hidden size)."""
    total = info.get("total_parameters", 0)
    trainable = info.get("trainable_parameters", 0)
    share = f"{100 * trainable / total:.1f}%" if total else "n/a"
    return (f"Model: {info.get('architecture')} from {info.get('model_name')}\n"
            f"  parameters: {total:,} total, {trainable:,} trainable ({share})\n"
            f"  layers: {info.get('num_layers')}, hidden size: {info.get('hidden_size')}, "
            f"frozen layers: {info.get('frozen_layers', 0)}")


def _format_value(value) -> str:
    return f"{value:.4f}" if isinstance(value, (int, float)) and value is not None else "-"


def format_run_summary(results: dict) -> str:
    """The end-of-run table: validation and test metrics side by side, then per-class F1."""
    rows = ["accuracy", "f1_macro", "f1_weighted", "f1_biased", "loss"]
    eval_metrics, test_metrics = results.get("eval", {}), results.get("test", {})
    lines = [f"\nSummary of {results.get('experiment_id')} ({results.get('status')})",
             f"  {'metric':<14}{'validation':>12}{'test':>12}", "  " + "-" * 38]
    for name in rows:
        lines.append(f"  {name:<14}{_format_value(eval_metrics.get(name)):>12}"
                     f"{_format_value(test_metrics.get(name)):>12}")
    per_class = test_metrics.get("per_class", {})
    if per_class:
        lines.append("  test per class:   precision  recall      f1  support")
        for label, scores in per_class.items():
            lines.append(f"    {label:<14}{scores['precision']:>11.4f}{scores['recall']:>8.4f}"
                         f"{scores['f1']:>8.4f}{scores['support']:>9d}")
    training, timing = results.get("training", {}), results.get("timing", {})
    if training:
        best_value = _format_value(training.get("best_value"))
        lines.append(f"  best {training.get('best_metric')} = {best_value}"
                     f" at step {training.get('best_step')} (epoch {training.get('best_epoch')});"
                     f" {training.get('total_steps')} steps"
                     f"{', stopped early' if training.get('stopped_early') else ''}")
    if timing:
        lines.append(f"  time: {timing.get('total_seconds', 0):.1f}s total, "
                     f"{timing.get('train_samples_per_second', 0):.1f} train samples/s")
    if "cross_validation" in results:
        cv = results["cross_validation"]
        lines.append(f"  cross-validation over {cv.get('num_folds')} folds: test f1_macro "
                     f"{_format_value(cv['mean'].get('test/f1_macro'))} ± "
                     f"{_format_value(cv['std'].get('test/f1_macro'))}")
    return "\n".join(lines)
