// The learning-curve chart: train and validation loss against the optimizer step, in inline
// SVG, with a marker lane for checkpoints, promotions, rollbacks, early stops and drift.
// The container's data attributes count what is drawn (data-points, data-marker-<kind>).

const SVG = "http://www.w3.org/2000/svg";
const HEIGHT = 320;
const MARGIN = { top: 46, right: 18, bottom: 34, left: 58 };
const LANE_Y = [9, 22, 36]; // the marker lane's rows, above the plot
const MAX_POINTS = 2000; // live points beyond this are thinned, first and last kept

export const SERIES = [
  { key: "train_loss", label: "Train loss" },
  { key: "val_loss", label: "Validation loss" },
];

// Checkpoints and promotions are frequent and quiet: a lane row each. The events that change
// the course of training share the last row and get a dashed line across the plot.
export const MARKERS = {
  checkpoint: { label: "Checkpoint", shape: "circle", row: 0 },
  promote: { label: "Promote", shape: "diamond", row: 1 },
  rollback: { label: "Rollback", shape: "triangle-down", row: 2 },
  early_stop: { label: "Early stop", shape: "square", row: 2 },
  drift: { label: "Drift", shape: "cross", row: 2 },
  stop: { label: "Stop", shape: "bar", row: 2 },
  resume: { label: "Resume", shape: "triangle-right", row: 2 },
};

export function svg(tag, attributes = {}, text = null) {
  const node = document.createElementNS(SVG, tag);
  for (const [name, value] of Object.entries(attributes)) node.setAttribute(name, value);
  if (text !== null) node.textContent = text;
  return node;
}

export function shape(kind, x, y, size = 5) {
  const s = size;
  const forms = {
    circle: () => svg("circle", { cx: x, cy: y, r: s * 0.85 }),
    diamond: () =>
      svg("polygon", { points: `${x},${y - s} ${x + s},${y} ${x},${y + s} ${x - s},${y}` }),
    "triangle-down": () =>
      svg("polygon", { points: `${x - s},${y - s} ${x + s},${y - s} ${x},${y + s}` }),
    "triangle-right": () =>
      svg("polygon", { points: `${x - s},${y - s} ${x + s},${y} ${x - s},${y + s}` }),
    square: () =>
      svg("rect", { x: x - s * 0.85, y: y - s * 0.85, width: s * 1.7, height: s * 1.7 }),
    bar: () => svg("rect", { x: x - s * 0.45, y: y - s, width: s * 0.9, height: s * 2 }),
    cross: () =>
      svg("path", {
        d: `M${x - s},${y - s}L${x + s},${y + s}M${x - s},${y + s}L${x + s},${y - s}`,
      }),
  };
  const node = forms[MARKERS[kind].shape]();
  node.setAttribute("class", `marker marker-${kind.replace("_", "-")}`);
  return node;
}

export function formatNumber(value) {
  if (value === null || value === undefined || !Number.isFinite(value)) return "—";
  if (Math.abs(value) >= 1000) return Math.round(value).toLocaleString("en-US");
  return String(Number(value.toPrecision(4)));
}

function niceTicks(low, high, count) {
  const span = high - low;
  const raw = span / Math.max(count, 1);
  const power = 10 ** Math.floor(Math.log10(raw));
  const step = [1, 2, 5, 10].map((m) => m * power).find((s) => span / s <= count) ?? 10 * power;
  const ticks = [];
  for (let t = Math.ceil(low / step) * step; t <= high + step * 1e-9; t += step) ticks.push(t);
  return ticks;
}

function extent(values, pad) {
  const finite = values.filter(Number.isFinite);
  if (!finite.length) return [0, 1];
  let low = Math.min(...finite);
  let high = Math.max(...finite);
  if (high === low) {
    const spread = Math.abs(low) * 0.1 || 0.5;
    return [low - spread, high + spread];
  }
  const margin = (high - low) * pad;
  return [low >= 0 ? Math.max(0, low - margin) : low - margin, high + margin]; // losses stay ≥ 0
}

export class LossChart {
  constructor(container, legend, readout) {
    this.container = container;
    this.legend = legend;
    this.readout = readout;
    this.points = [];
    this.markers = [];
    this.markerIds = new Set();
    this.width = 0;
    new ResizeObserver(() => this.resized()).observe(container);
  }

  reset(points, markers) {
    this.points = [];
    this.markers = [];
    this.markerIds.clear();
    for (const marker of markers) this.addMarker(marker, false); // in id order
    this.points = points.filter((p) => Number.isFinite(p.step));
    this.render();
  }

  get lastStep() {
    return this.points.length ? this.points[this.points.length - 1].step : -Infinity;
  }

  // A round from the stream; rounds already drawn from the history are skipped by step,
  // which only ever grows (a rollback moves the weights back, not the step counter).
  addPoint(point) {
    if (!Number.isFinite(point.step) || point.step <= this.lastStep) return;
    this.points.push(point);
    if (this.points.length > MAX_POINTS) {
      this.points = this.points.filter((_, i) => i % 2 === 0 || i === this.points.length - 1);
    }
    this.render();
  }

  // A drift event carries no step: the step does not move while a model is stopped, so it
  // takes the step of the latest event before it.
  addMarker(marker, render = true) {
    if (!(marker.kind in MARKERS) || this.markerIds.has(marker.id)) return;
    this.markerIds.add(marker.id);
    const before = this.markers.length ? this.markers[this.markers.length - 1].step : -Infinity;
    const step = Number.isFinite(marker.step) ? marker.step : Math.max(before, this.lastStep);
    this.markers.push({ ...marker, step: Number.isFinite(step) ? step : null });
    if (render) this.render();
  }

  resized() {
    const width = Math.floor(this.container.clientWidth);
    if (width > 0 && width !== this.width) this.render();
  }

  scales() {
    const width = this.width;
    const steps = [...this.points.map((p) => p.step), ...this.markers.map((m) => m.step)].filter(
      Number.isFinite,
    );
    let [x0, x1] = steps.length ? [Math.min(...steps), Math.max(...steps)] : [0, 1];
    if (x0 === x1) [x0, x1] = [Math.max(0, x0 - 1), x1 + 1];
    const values = this.points.flatMap((p) => SERIES.map((s) => p[s.key]));
    const [y0, y1] = extent(values, 0.06);
    const plotW = width - MARGIN.left - MARGIN.right;
    const plotH = HEIGHT - MARGIN.top - MARGIN.bottom;
    return {
      x: (v) => MARGIN.left + ((v - x0) / (x1 - x0)) * plotW,
      y: (v) => MARGIN.top + (1 - (v - y0) / (y1 - y0)) * plotH,
      x0,
      x1,
      y0,
      y1,
      plotW,
      plotH,
    };
  }

  render() {
    this.width = Math.max(320, Math.floor(this.container.clientWidth));
    const root = svg("svg", {
      viewBox: `0 0 ${this.width} ${HEIGHT}`,
      role: "img",
      "aria-label": `Train and validation loss over ${this.points.length} evaluation rounds`,
    });
    const scale = this.scales();
    this.drawAxes(root, scale);
    if (this.points.length) {
      for (const series of SERIES) this.drawSeries(root, scale, series);
    } else {
      root.append(
        svg(
          "text",
          {
            x: this.width / 2,
            y: HEIGHT / 2,
            class: "empty",
            "text-anchor": "middle",
          },
          "No evaluation rounds yet: stream labelled batches to partial-fit.",
        ),
      );
    }
    this.drawMarkers(root, scale);
    this.drawHover(root, scale);
    this.container.replaceChildren(root);
    this.updateCounts();
    this.renderLegend();
    this.showReadout(this.points[this.points.length - 1]);
  }

  drawAxes(root, scale) {
    const axes = svg("g", { class: "axes" });
    const bottom = MARGIN.top + scale.plotH;
    for (const t of niceTicks(scale.y0, scale.y1, 5)) {
      const y = scale.y(t);
      axes.append(
        svg("line", {
          x1: MARGIN.left,
          x2: MARGIN.left + scale.plotW,
          y1: y,
          y2: y,
          class: "grid",
        }),
      );
      axes.append(
        svg("text", { x: MARGIN.left - 8, y: y + 4, "text-anchor": "end" }, formatNumber(t)),
      );
    }
    const ticks = niceTicks(scale.x0, scale.x1, Math.max(2, Math.floor(scale.plotW / 90)));
    for (const t of ticks.filter(Number.isInteger)) {
      const x = scale.x(t);
      axes.append(svg("line", { x1: x, x2: x, y1: bottom, y2: bottom + 5, class: "tick" }));
      axes.append(svg("text", { x, y: bottom + 18, "text-anchor": "middle" }, formatNumber(t)));
    }
    axes.append(
      svg("line", {
        x1: MARGIN.left,
        x2: MARGIN.left + scale.plotW,
        y1: bottom,
        y2: bottom,
        class: "axis",
      }),
    );
    axes.append(
      svg(
        "text",
        { x: MARGIN.left + scale.plotW, y: HEIGHT - 2, "text-anchor": "end", class: "label" },
        "optimizer step",
      ),
    );
    root.append(axes);
  }

  drawSeries(root, scale, series) {
    let d = "";
    let pen = false;
    for (const point of this.points) {
      const value = point[series.key];
      if (!Number.isFinite(value)) {
        pen = false;
        continue;
      }
      d += `${pen ? "L" : "M"}${scale.x(point.step).toFixed(1)},${scale.y(value).toFixed(1)}`;
      pen = true;
    }
    const group = svg("g", { class: `series series-${series.key.replace("_", "-")}` });
    group.append(svg("path", { d }));
    const last = [...this.points].reverse().find((p) => Number.isFinite(p[series.key]));
    if (last)
      group.append(svg("circle", { cx: scale.x(last.step), cy: scale.y(last[series.key]), r: 3 }));
    root.append(group);
  }

  drawMarkers(root, scale) {
    const group = svg("g", { class: "markers" });
    const bottom = MARGIN.top + scale.plotH;
    const taken = [[], [], []]; // shape positions per row, to set apart markers at one step
    for (const marker of this.markers) {
      if (!Number.isFinite(marker.step)) continue;
      const x = scale.x(marker.step);
      const { row } = MARKERS[marker.kind];
      let at = x;
      while (row === 2 && taken[row].some((other) => Math.abs(other - at) < 11)) at += 12;
      taken[row].push(at);
      const node = svg("g", { class: `marker-${marker.kind.replace("_", "-")}` });
      if (row === 2) {
        node.append(svg("line", { x1: x, x2: x, y1: LANE_Y[2], y2: bottom, class: "rule" }));
      }
      node.append(shape(marker.kind, at, LANE_Y[row]));
      node.append(svg("title", {}, describeMarker(marker)));
      group.append(node);
    }
    root.append(group);
  }

  drawHover(root, scale) {
    if (!this.points.length) return;
    const line = svg("line", {
      y1: MARGIN.top,
      y2: MARGIN.top + scale.plotH,
      class: "crosshair",
      visibility: "hidden",
    });
    const area = svg("rect", {
      x: MARGIN.left,
      y: MARGIN.top,
      width: scale.plotW,
      height: scale.plotH,
      class: "hover",
    });
    area.addEventListener("mousemove", (event) => {
      const box = root.getBoundingClientRect();
      const x = ((event.clientX - box.left) / box.width) * this.width;
      const point = this.nearest(scale, x);
      line.setAttribute("x1", scale.x(point.step));
      line.setAttribute("x2", scale.x(point.step));
      line.setAttribute("visibility", "visible");
      this.showReadout(point);
    });
    area.addEventListener("mouseleave", () => {
      line.setAttribute("visibility", "hidden");
      this.showReadout(this.points[this.points.length - 1]);
    });
    root.append(line, area);
  }

  nearest(scale, x) {
    let best = this.points[0];
    for (const point of this.points) {
      if (Math.abs(scale.x(point.step) - x) < Math.abs(scale.x(best.step) - x)) best = point;
    }
    return best;
  }

  showReadout(point) {
    if (!point) {
      this.readout.textContent = "";
      return;
    }
    const parts = [`step ${formatNumber(point.step)}`];
    for (const [key, label] of [
      ["train_loss", "train"],
      ["val_loss", "val"],
      ["val_accuracy", "acc"],
    ]) {
      if (key in point) parts.push(`${label} ${formatNumber(point[key])}`);
    }
    this.readout.textContent = parts.join(" · ");
  }

  counts() {
    const counts = Object.fromEntries(Object.keys(MARKERS).map((kind) => [kind, 0]));
    for (const marker of this.markers) counts[marker.kind] += 1;
    return counts;
  }

  updateCounts() {
    this.container.dataset.points = String(this.points.length);
    this.container.dataset.markers = String(this.markers.length);
    for (const [kind, count] of Object.entries(this.counts())) {
      this.container.setAttribute(`data-marker-${kind.replace("_", "-")}`, String(count));
    }
  }

  renderLegend() {
    const items = SERIES.map((series) => {
      const icon = svg("svg", {
        viewBox: "0 0 22 12",
        width: 22,
        height: 12,
        "aria-hidden": "true",
      });
      icon.append(
        svg("line", {
          x1: 1,
          x2: 21,
          y1: 6,
          y2: 6,
          class: `swatch series-${series.key.replace("_", "-")}`,
        }),
      );
      return legendItem(icon, series.label, null);
    });
    for (const [kind, count] of Object.entries(this.counts())) {
      const icon = svg("svg", {
        viewBox: "0 0 14 14",
        width: 14,
        height: 14,
        "aria-hidden": "true",
      });
      icon.append(shape(kind, 7, 7, 5));
      items.push(legendItem(icon, MARKERS[kind].label, count));
    }
    this.legend.replaceChildren(...items);
  }
}

function legendItem(icon, label, count) {
  const item = document.createElement("li");
  const text = document.createElement("span");
  text.textContent = count === null ? label : `${label} (${count})`;
  item.append(icon, text);
  if (count === 0) item.classList.add("absent");
  return item;
}

export function describeMarker(marker) {
  const label = MARKERS[marker.kind].label;
  const version = marker.version ? ` → v${marker.version}` : "";
  const step = Number.isFinite(marker.step) ? ` at step ${marker.step}` : "";
  const reason = marker.reason ? ` (${marker.reason})` : "";
  return `${label}${version}${step}${reason}`;
}
