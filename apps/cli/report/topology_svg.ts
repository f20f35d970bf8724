/**
 * DOC: topology SVG
 *
 * Draws a world's PCI fabric as an SVG tree (CPU/root complex on top, host
 * bridges, then ports, switches and endpoints) and highlights each
 * transfer's path: the hops up from the source to the lowest common
 * upstream bridge and down to the destination, or up through the root
 * complex when they share none (the walk `calc_map_type_and_dist` makes).
 * Paths through a switch and through the root complex get different
 * classes; ATS on or off is a separate class, so the legend can say both.
 *
 * @module
 */
import type { PciBus, PciDev, PciFabric } from "@dmalab/pci-p2p";

/** A DMA transfer to draw. */
export interface ReportTransfer {
  /** Short label (`RDMA write`). */
  label: string;
  /** The device issuing the DMA (or the provider of the memory). */
  src: PciDev;
  /** The other end (null: system RAM, reached through the root complex). */
  dst: PciDev | null;
  /** P2PDMA map type name that routed it (`BUS_ADDR`, `THRU_HOST_BRIDGE`, `NONE`...). */
  mapType: string;
  /** Whether the issuing device used ATS. */
  ats: boolean;
  /** Bytes moved. */
  bytes: number;
}

interface Node {
  id: string;
  label: string;
  sub: string;
  kind: "cpu" | "host" | "bridge" | "endpoint";
  children: Node[];
  x: number;
  y: number;
}

const NODE_W = 150;
const NODE_H = 38;
const GAP_X = 18;
const GAP_Y = 44;

function escapeXml(s: string): string {
  return s.replace(
    /[&<>"']/g,
    (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" })[c]!,
  );
}

/** HTML/XML text escaping shared by the report writers. */
export { escapeXml };

function shortLabel(d: PciDev): string {
  const l = d.label || d.type;
  return l.length > 22 ? `${l.slice(0, 21)}…` : l;
}

function busChildren(bus: PciBus): Node[] {
  return bus.devices.map((d) => devNode(d));
}

function devNode(d: PciDev): Node {
  const children = d.subordinate ? busChildren(d.subordinate) : [];
  return {
    id: d.name,
    label: d.name,
    sub: shortLabel(d),
    kind: d.subordinate ? "bridge" : "endpoint",
    children,
    x: 0,
    y: 0,
  };
}

function buildTree(fabric: PciFabric): Node {
  return {
    id: "cpu",
    label: fabric.cpu ? `${fabric.cpu.vendor} CPU` : "CPU",
    sub: "root complex",
    kind: "cpu",
    x: 0,
    y: 0,
    children: fabric.hostBridges.map((hb) => ({
      id: hb.name,
      label: hb.name,
      sub: `host bridge, node ${hb.numaNode}`,
      kind: "host" as const,
      x: 0,
      y: 0,
      children: busChildren(hb.bus),
    })),
  };
}

/** Assigns x to leaves left to right and centres parents over children. */
function layout(n: Node, depth: number, next: { x: number }): void {
  n.y = 10 + depth * (NODE_H + GAP_Y);
  if (n.children.length === 0) {
    n.x = next.x;
    next.x += NODE_W + GAP_X;
    return;
  }
  for (const c of n.children) layout(c, depth + 1, next);
  n.x = (n.children[0]!.x + n.children[n.children.length - 1]!.x) / 2;
}

function walk(n: Node, out: Node[] = []): Node[] {
  out.push(n);
  for (const c of n.children) walk(c, out);
  return out;
}

/** Ancestor chain of a node id, from the node up to the CPU. */
function kindOf(parents: Map<string, Node>, id: string): Node["kind"] | undefined {
  return parents.get(id)?.children.find((c) => c.id === id)?.kind;
}

function chain(parents: Map<string, Node>, id: string): string[] {
  const out = [id];
  let p = parents.get(id);
  while (p) {
    out.push(p.id);
    p = parents.get(p.id);
  }
  return out;
}

/**
 * The edges (child id) a transfer crosses, and whether it went through the
 * CPU. A THRU_HOST_BRIDGE transfer turns at the host bridge even when the
 * two ends share a switch: that map type means ACS redirect (or a missing
 * common bridge) sends the TLPs up to the root complex.
 */
function transferPath(
  parents: Map<string, Node>,
  src: string,
  dst: string | null,
  throughHost: boolean,
): { edges: string[]; viaCpu: boolean } {
  const a = chain(parents, src);
  const b = dst === null ? ["cpu"] : chain(parents, dst);
  const turnsHere = (id: string): boolean => {
    if (!b.includes(id)) return false;
    if (!throughHost) return true;
    const kind = id === "cpu" ? "cpu" : parents.get(id) === undefined ? "cpu" : kindOf(parents, id);
    return kind === "host" || kind === "cpu";
  };
  const common = a.find(turnsHere) ?? "cpu";
  const up = a.slice(0, a.indexOf(common));
  const down = b.slice(0, b.indexOf(common));
  return { edges: [...up, ...down], viaCpu: common === "cpu" };
}

function pathClass(t: ReportTransfer): string {
  const via = t.mapType === "BUS_ADDR" ? "via-switch" : "via-rc";
  return `${via} ${t.ats ? "ats-on" : "ats-off"}`;
}

/**
 * The fabric as an SVG document fragment with one highlighted path group per
 * transfer (`data-transfer="i"`).
 */
export function topologySvg(fabric: PciFabric, transfers: readonly ReportTransfer[]): string {
  const root = buildTree(fabric);
  layout(root, 0, { x: 10 });
  const nodes = walk(root);
  const parents = new Map<string, Node>();
  for (const n of nodes) for (const c of n.children) parents.set(c.id, n);
  const width = Math.max(...nodes.map((n) => n.x)) + NODE_W + 10;
  const height = Math.max(...nodes.map((n) => n.y)) + NODE_H + 10;
  const byId = new Map(nodes.map((n) => [n.id, n]));
  const edge = (childId: string): string => {
    const c = byId.get(childId)!;
    const p = parents.get(childId)!;
    const x1 = p.x + NODE_W / 2;
    const y1 = p.y + NODE_H;
    const x2 = c.x + NODE_W / 2;
    const y2 = c.y;
    const my = (y1 + y2) / 2;
    return `M${x1},${y1} C${x1},${my} ${x2},${my} ${x2},${y2}`;
  };
  const parts: string[] = [
    `<svg xmlns="http://www.w3.org/2000/svg" id="topology" viewBox="0 0 ${width} ${height}" width="${width}" height="${height}" role="img" aria-label="PCI topology of ${
      escapeXml(fabric.name)
    }">`,
  ];
  for (const n of nodes) {
    if (parents.has(n.id)) parts.push(`<path class="link" d="${edge(n.id)}"/>`);
  }
  transfers.forEach((t, i) => {
    const { edges, viaCpu } = transferPath(
      parents,
      t.src.name,
      t.dst?.name ?? null,
      t.mapType === "THRU_HOST_BRIDGE",
    );
    parts.push(
      `<g class="transfer ${pathClass(t)}" data-transfer="${i}"><title>${
        escapeXml(
          `${t.label}: ${t.src.name} -> ${t.dst?.name ?? "system RAM"}, ${t.mapType}${
            viaCpu ? " (root complex)" : ""
          }, ATS ${t.ats ? "on" : "off"}`,
        )
      }</title>${edges.map((e) => `<path d="${edge(e)}"/>`).join("")}</g>`,
    );
  });
  for (const n of nodes) {
    parts.push(
      `<g class="node ${n.kind}" data-id="${
        escapeXml(n.id)
      }" transform="translate(${n.x},${n.y})">` +
        `<rect width="${NODE_W}" height="${NODE_H}" rx="6"/>` +
        `<text x="${NODE_W / 2}" y="15">${escapeXml(n.label)}</text>` +
        `<text class="sub" x="${NODE_W / 2}" y="30">${escapeXml(n.sub)}</text></g>`,
    );
  }
  parts.push("</svg>");
  return parts.join("\n");
}
