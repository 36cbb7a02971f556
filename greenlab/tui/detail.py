"""One run in full: its power trace, epochs, settings, and how each energy figure was obtained.

The screen gets read functions (the UI thread's Store methods) and draws what they return; nothing is
computed here beyond formatting. Measured and estimated joules are shown apart, as the store keeps them.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from rich.markup import escape as escape_markup
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.screen import Screen
from textual.widgets import DataTable, Footer, Header, Label, Static
from textual_plotext import PlotextPlot

from greenlab.core.report import compare, formatting
from greenlab.core.report.energy_to_target import accuracy_curve
from greenlab.core.report.formatting import accuracy, duration, energy, kind_of_row
from greenlab.core.store.rows import ComponentRow, EpochRow, RunRow
from greenlab.core.text import escape_controls
from greenlab.tui.boxes import titled
from greenlab.tui.charts import legend_fits, legend_headroom


def escape(text: str) -> str:
    """Stored text as the detail shows it: control characters written out (never obeyed by the terminal),
    markup characters taken literally."""
    return escape_markup(escape_controls(text))


def _number(value: Any, unit: str = "", digits: int = 1) -> str:
    return "-" if value is None else f"{value:,.{digits}f}{unit}"


def _inputs(inputs: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v}" for k, v in inputs.items()) or "-"


class DetailScreen(Screen):
    """Pushed over the main screen; escape goes back."""

    BINDINGS = [Binding("escape,backspace", "app.pop_screen", "Back", id="detail.back")]

    def __init__(self, run_id: int, read: dict[str, Callable[[int], Any]]) -> None:
        super().__init__(id="detail")
        self.run_id = run_id
        self.read = read  # run, epochs, samples, components: Store methods
        self.row: RunRow | None = read["run"](run_id)
        self.component_rows: list[ComponentRow] = read["components"](run_id) if self.row else []

    def compose(self) -> ComposeResult:
        yield Header()
        with VerticalScroll(id="detail-body"):
            yield Static(self._summary(), id="detail-summary")
            yield titled(PlotextPlot(id="detail-trace"), "Power trace (W, from the samples table)")
            yield titled(PlotextPlot(id="detail-to-target"), "Energy to accuracy (epoch by epoch)")
            yield Label("Epochs", classes="section")
            yield DataTable(id="detail-epochs", cursor_type="none", zebra_stripes=True)
            yield Label("How the energy was obtained", classes="section")
            yield DataTable(id="detail-components", cursor_type="none", zebra_stripes=True)
            yield Static(self._meters(), id="detail-meters")
            yield Label("Settings", classes="section")
            yield Static(self._settings(), id="detail-settings")
        yield Footer(compact=True, show_command_palette=False)

    def on_mount(self) -> None:
        row = self.row
        named = (row.model, row.technique) if row is not None else ("?", "?")
        self.title = escape_controls(f"Run {self.run_id}: {named[0]} · {named[1]}")
        epochs = self.read["epochs"](self.run_id)
        self._epochs(epochs)
        self._components()
        self._trace()
        self._to_target(epochs)

    # -- sections -------------------------------------------------------------------------------------
    def _summary(self) -> str:
        row = self.row
        if row is None:
            return f"Run {self.run_id} is not in the store."
        kind = kind_of_row(row)
        measured_by = [str(c.component) for c in self.component_rows if c.method in ("counter", "polled")]
        estimated_by = [str(c.component) for c in self.component_rows if c.method == "estimate"]
        lines = [
            f"[b]{escape(row.model)} · {escape(compare.technique_of(row))}[/]  experiment {escape(str(row.experiment))}"
            f"  dataset {escape(str(row.dataset))}  repeat {(row.repeat or 0) + 1}  "
            f"status [b]{row.status}[/]",
            f"energy [b]{energy(row.energy_j)}[/]  [reverse] {kind.upper()} [/]"
            f" = measured {_number(row.energy_measured_j, ' J')}"
            + (f" ({', '.join(measured_by)})" if measured_by else "")
            + f" + estimated {_number(row.energy_estimated_j, ' J')}"
            + (f" ({', '.join(estimated_by)})" if estimated_by else "")
            + f"; net of idle {_number(row.energy_net_j, ' J')}",
            f"time {duration(row.duration_s)} (training {duration(row.train_s)})"
            f"  val acc {accuracy(row.val_accuracy)}  f1 {_number(row.val_f1, '', 3)}"
            f"  device {escape(str(row.device))}",
            f"{formatting.mass_co2e(row.co2e_g)} at {_number(row.carbon_g_per_kwh, ' g/kWh', 0)}"
            f" x PUE {row.pue}  cost {formatting.money(row.cost, str(row.currency or ''))}",
        ]
        if row.fp32_precision is not None or row.bf16_native is not None:
            native = (
                {1: "native", 0: "emulated"}.get(int(row.bf16_native), "unknown")
                if row.bf16_native is not None
                else "unknown"
            )
            lines.append(
                f"arithmetic {escape(str(row.compute_dtype))} (float32 precision "
                f"{escape(str(row.fp32_precision or '-'))}, bfloat16 {native} here)"
                f"  weights {escape(str(row.weights_dtype))}"
                + (f"  waited for data {duration(row.data_wait_s)}" if row.data_wait_s is not None else "")
            )
        if row.params_total:
            lines.append(
                f"parameters {row.params_nonzero:,} nonzero of {row.params_total:,}"
                f" (before: {row.params_nonzero_before or 0:,} of {row.params_total_before or 0:,})"
            )
        if row.error:
            lines.append(f"[b]error[/] {escape(str(row.error).splitlines()[0])}")
        for warning in row.warnings:
            lines.append(f"warning: {escape(str(warning))}")
        flags = row.flags
        if flags:
            lines.append("flags: " + escape(", ".join(map(str, flags))))
        return "\n".join(lines)

    def _epochs(self, epochs: list[EpochRow]) -> None:
        table = self.query_one("#detail-epochs", DataTable)
        for label in ("epoch", "train loss", "val acc", "f1", "val loss", "train s", "eval s", "energy", "cumulative"):
            table.add_column(label, key=label)
        cumulative = {epoch: total for epoch, total, _accuracy in accuracy_curve(epochs)}
        for epoch in epochs:
            table.add_row(
                str(epoch.epoch),
                formatting.loss(epoch.train_loss),
                accuracy(epoch.val_accuracy),
                _number(epoch.val_f1, "", 3),
                formatting.loss(epoch.val_loss),
                _number(epoch.train_s),
                _number(epoch.eval_s),
                energy(epoch.energy_j),
                energy(cumulative.get(epoch.epoch)),  # type: ignore[arg-type]  # None is not among them
            )
        if not table.row_count:
            table.add_row("-", "no epoch finished", "", "", "", "", "", "", "")

    def _to_target(self, epochs: list[EpochRow]) -> None:
        """Validation accuracy against the energy spent so far, with the run's target accuracy."""
        plot = self.query_one("#detail-to-target", PlotextPlot)
        plt = plot.plt
        plt.clear_data()
        curve = accuracy_curve(epochs)
        row = self.row
        target, reached = (row.target_accuracy, row.energy_to_target_j) if row is not None else (None, None)
        if curve:
            plt.plot(
                [joules for _e, joules, _a in curve],
                [100 * a for _e, _j, a in curve],
                marker="braille",
                label="val acc",
            )
            if target is not None:
                plt.hline(100 * target)
        plt.xlabel("energy spent so far (J, training and evaluation windows)")
        plt.ylabel("val acc %")
        if target is None:
            plt.title("no target: no completed baseline of the same conditions" if curve else "no epoch energy")
        else:
            plt.title(
                f"target {accuracy(target)} (baselines' mean - 1 pp): "
                + (f"reached after {energy(reached)}" if reached is not None else "never reached")
            )
        plot.refresh()

    def _components(self) -> None:
        table = self.query_one("#detail-components", DataTable)
        for label in ("component", "energy", "method", "idle W", "net", "inputs", "flags"):
            table.add_column(label, key=label)
        for part in self.component_rows:
            table.add_row(
                escape_controls(str(part.component)),
                energy(part.energy_j),
                part.method or "-",
                _number(part.idle_w),
                energy(part.net_energy_j),
                escape_controls(_inputs(part.inputs or {})),
                escape_controls(", ".join(part.flags or [])) or "-",
            )
        if not table.row_count:
            table.add_row("-", "-", "no components stored", "", "", "", "")

    def _meters(self) -> str:
        meters = self.row.meters if self.row is not None else {}
        lines = []
        for component, facts in (meters.get("components") or {}).items():
            described = ", ".join(f"{k}={v}" for k, v in facts.items() if k != "method")
            lines.append(f"{component}: {facts.get('method', '?')}" + (f" ({escape(described)})" if described else ""))
        for meter, note in (meters.get("fallbacks") or {}).items():
            lines.append(f"[i]{escape(str(meter))}: {escape(str(note))}[/]")
        return "\n".join(lines) or "no meter facts stored"

    def _settings(self) -> str:
        settings = dict(self.row.settings) if self.row is not None else {}  # a copy: the row's own stays whole
        techniques = settings.pop("techniques", {})
        parts = [f"{k} = {json.dumps(v)}" for k, v in settings.items()]
        for name, table in (techniques or {}).items():
            parts.extend(f"{name}.{k} = {json.dumps(v)}" for k, v in table.items())
        return escape("   ".join(parts)) or "-"

    def _trace(self) -> None:
        plot = self.query_one("#detail-trace", PlotextPlot)
        samples = self.read["samples"](self.run_id)
        by_component: dict[str, list[tuple[float, float]]] = {}
        for sample in samples:
            by_component.setdefault(sample.component, []).append((sample.t_s, sample.watts))
        plt = plot.plt
        plt.clear_data()
        # The legend, drawn top left, sits above the traces instead of over their first seconds; on a chart
        # too short for both it is left out (the components table below names them).
        labelled = legend_fits(len(by_component), plot.size.height)
        for component, points in by_component.items():
            xs, ys = [t for t, _w in points], [w for _t, w in points]
            plt.plot(xs, ys, label=component if labelled else None, marker="braille")
        top = max((w for points in by_component.values() for _t, w in points), default=0.0)
        if top > 0 and labelled:
            plt.ylim(0, legend_headroom(top, len(by_component), plot.size.height))
        plt.xlabel("seconds")
        if not by_component:
            plt.title("no samples stored for this run")
        plot.refresh()
