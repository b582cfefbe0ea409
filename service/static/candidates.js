// A race's candidates side by side: each one's validation curve (the monitored metric per
// round) in one chart, the leader drawn thick, retired candidates dashed from where they stop,
// and a legend that says what each candidate changes and when and why it was retired.

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

export function renderCandidates(chartNode, legendNode, candidates, monitor) {
  const key = monitor || "val_loss";
  const rounds = candidates.flatMap((c) => c.history.map((p) => p.round));
  const [x0, x1] = bounds([1, ...rounds]);
  const [y0, y1] = bounds(candidates.flatMap((c) => c.history.map((p) => p[key])));
  const x = (round) => PAD.left + ((round - x0) / (x1 - x0)) * (WIDTH - PAD.left - PAD.right);
  const y = (value) => PAD.top + ((y1 - value) / (y1 - y0)) * (HEIGHT - PAD.top - PAD.bottom);
  const root = svg("svg", { viewBox: `0 0 ${WIDTH} ${HEIGHT}`, role: "img" });
  root.append(svg("title", {}, `${key} per round, one line per candidate`));
  for (const value of [y0, (y0 + y1) / 2, y1]) {
    root.append(svg("text", { x: 4, y: y(value) + 4 }, formatNumber(value)));
  }
  const axis = { x: WIDTH - PAD.right, y: HEIGHT - 6, "text-anchor": "end" };
  root.append(svg("text", axis, `${key} per round →`));
  legendNode.replaceChildren();
  for (const candidate of candidates) {
    const colour = COLOURS[candidate.index % COLOURS.length];
    const points = candidate.history.filter((p) => Number.isFinite(p[key]));
    const line = svg("polyline", {
      points: points.map((p) => `${x(p.round)},${y(p[key])}`).join(" "),
      fill: "none",
      stroke: colour,
      "stroke-width": candidate.leader ? 3 : 1.5,
      "stroke-dasharray": candidate.state === "retired" ? "4 3" : "",
      class: `candidate candidate-${candidate.state}`,
      "data-index": candidate.index,
    });
    root.append(line);
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
