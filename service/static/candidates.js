// A race's candidates side by side: each one's validation curve (the monitored metric per
// round, placed at the round's optimizer step) in one chart, the leader drawn thick, retired
// candidates dashed, and a legend that says what each candidate changes and when and why it
// was retired. A race reopened by drift numbers its rounds from 1 again: the step axis never
// goes back, and each race is its own line, so nothing is drawn back to the left.

import { formatNumber, svg } from "./chart.js";

const WIDTH = 720;
const HEIGHT = 220;
const PAD = { left: 48, right: 12, top: 10, bottom: 24 };
const COLOURS = ["#2563eb", "#dc2626", "#16a34a", "#9333ea", "#ea580c", "#0891b2", "#ca8a04",
  "#db2777", "#4b5563", "#65a30d", "#7c3aed", "#0d9488", "#b91c1c", "#1d4ed8", "#a16207",
  "#be185d"];

function describe(overrides) {
  const entries = Object.entries(overrides);
  if (!entries.length) return "base";
  return entries.map(([key, value]) => `${key}=${JSON.stringify(value)}`).join(", ");
}

function bounds(values) {
  const finite = values.filter(Number.isFinite);
  if (!finite.length) return [0, 1];
  const [low, high] = [Math.min(...finite), Math.max(...finite)];
  return low === high ? [low - 0.5, high + 0.5] : [low, high];
}

// Where a point sits on the x axis: its step (older services sent rounds only).
const position = (point) => point.step ?? point.round;

// A candidate's points cut where the rounds restart (a reopened race) or the position goes
// back: one line per uninterrupted run.
function segments(points) {
  const runs = [];
  let previous = null;
  for (const point of points) {
    const restarted = previous && (point.round <= previous.round ||
      position(point) < position(previous));
    if (!previous || restarted) runs.push([]);
    runs.at(-1).push(point);
    previous = point;
  }
  return runs;
}

export function renderCandidates(chartNode, legendNode, candidates, monitor) {
  const key = monitor || "val_loss";
  const positions = candidates.flatMap((c) => c.history.map(position));
  const [x0, x1] = bounds(positions.length ? positions : [1]);
  const [y0, y1] = bounds(candidates.flatMap((c) => c.history.map((p) => p[key])));
  const x = (round) => PAD.left + ((round - x0) / (x1 - x0)) * (WIDTH - PAD.left - PAD.right);
  const y = (value) => PAD.top + ((y1 - value) / (y1 - y0)) * (HEIGHT - PAD.top - PAD.bottom);
  const root = svg("svg", { viewBox: `0 0 ${WIDTH} ${HEIGHT}`, role: "img" });
  root.append(svg("title", {}, `${key} per round, one line per candidate`));
  for (const value of [y0, (y0 + y1) / 2, y1]) {
    root.append(svg("text", { x: 4, y: y(value) + 4 }, formatNumber(value)));
  }
  const axis = { x: WIDTH - PAD.right, y: HEIGHT - 6, "text-anchor": "end" };
  root.append(svg("text", axis, `${key} per round, by step →`));
  legendNode.replaceChildren();
  for (const candidate of candidates) {
    const colour = COLOURS[candidate.index % COLOURS.length];
    const points = candidate.history.filter((p) => Number.isFinite(p[key]));
    for (const run of segments(points)) {
      root.append(svg("polyline", {
        points: run.map((p) => `${x(position(p))},${y(p[key])}`).join(" "),
        fill: "none",
        stroke: colour,
        "stroke-width": candidate.leader ? 3 : 1.5,
        "stroke-dasharray": candidate.state === "retired" ? "4 3" : "",
        class: `candidate candidate-${candidate.state}`,
        "data-index": candidate.index,
      }));
      // A dot where each run ends: a run of one round (a candidate retired at once, or the
      // first round after a reopening) is otherwise invisible.
      const end = run.at(-1);
      root.append(svg("circle", {
        cx: x(position(end)), cy: y(end[key]), r: candidate.leader ? 3.5 : 2.5, fill: colour,
        class: "candidate-end",
      }));
    }
    const last = points.at(-1);
    const item = document.createElement("li");
    item.className = `candidate-${candidate.state}`;
    item.style.color = colour;
    const retired = candidate.retired_at
      ? ` · retired at round ${candidate.retired_at.round} (${candidate.retired_at.reason})`
      : "";
    const lead = candidate.leader ? " · leader (served through the gate)" : "";
    item.textContent = `#${candidate.index} ${describe(candidate.overrides)} · ` +
      `${key} ${formatNumber(last?.[key])}${lead}${retired}`;
    legendNode.append(item);
  }
  chartNode.replaceChildren(root);
  chartNode.dataset.candidates = String(candidates.length);
}
