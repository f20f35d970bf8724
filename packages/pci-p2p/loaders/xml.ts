/**
 * DOC: a small XML reader
 *
 * Enough XML for topology files (NCCL_TOPO_FILE, NCCL_GRAPH_FILE): the XML
 * declaration, comments, processing instructions and DOCTYPE are skipped;
 * elements with single- or double-quoted attributes, self-closing tags, text
 * (ignored unless non-blank), and the five predefined entities plus numeric
 * character references. Every error names line and column. The scanner only
 * moves forward, so any input terminates in time linear in its length.
 *
 * Locking: pure function.
 *
 * @module
 */

/** An element. */
export interface XmlElement {
  /** Tag name. */
  readonly name: string;
  /** Attributes in document order (later duplicates are an error). */
  readonly attrs: Readonly<Record<string, string>>;
  /** Child elements. */
  readonly children: XmlElement[];
  /** Non-blank text directly inside, trimmed and joined. */
  text: string;
  /** 1-based line of the start tag. */
  readonly line: number;
  /** 1-based column of the start tag. */
  readonly col: number;
}

/** A parse or validation error with its position. */
export class TopologyParseError extends Error {
  /** 1-based line (0 when not applicable). */
  readonly line: number;
  /** 1-based column (0 when not applicable). */
  readonly col: number;

  /** `what` at line:col. */
  constructor(what: string, line: number, col: number, source = "input") {
    super(`${source}:${line}:${col}: ${what}`);
    this.name = "TopologyParseError";
    this.line = line;
    this.col = col;
  }
}

const NAME_START = /[A-Za-z_:]/;
const NAME_CHAR = /[A-Za-z0-9_:.\-]/;

/**
 * Parses `text` and returns the root element.
 *
 * @example
 * ```ts
 * import { parseXml } from "@dmalab/pci-p2p";
 * const root = parseXml('<system version="1"><cpu numaid="0"/></system>');
 * root.children[0]!.attrs.numaid; // "0"
 * ```
 */
export function parseXml(text: string, source = "input"): XmlElement {
  let i = 0;
  let line = 1;
  let lineStart = 0;
  const n = text.length;
  const err = (what: string, at = i): never => {
    // compute line/col of `at`
    let l = 1;
    let ls = 0;
    for (let k = 0; k < at && k < n; k++) {
      if (text.charCodeAt(k) === 10) {
        l++;
        ls = k + 1;
      }
    }
    throw new TopologyParseError(what, l, at - ls + 1, source);
  };
  const advance = (to: number) => {
    for (let k = i; k < to; k++) {
      if (text.charCodeAt(k) === 10) {
        line++;
        lineStart = k + 1;
      }
    }
    i = to;
  };
  const skipUntil = (end: string, what: string) => {
    const j = text.indexOf(end, i);
    if (j < 0) err(`unterminated ${what}`);
    advance(j + end.length);
  };
  const decode = (s: string, at: number): string => {
    if (/&(?!(#x[0-9a-fA-F]+|#[0-9]+|[a-zA-Z]+);)/.test(s)) err(`bare '&' (write &amp;)`, at);
    return s.replace(/&(#x[0-9a-fA-F]+|#[0-9]+|[a-zA-Z]+);?/g, (_m, body: string) => {
      if (body.startsWith("#x")) return safeChar(parseInt(body.slice(2), 16), at);
      if (body.startsWith("#")) return safeChar(parseInt(body.slice(1), 10), at);
      const e = ENTITIES[body];
      if (e === undefined) err(`unknown entity &${body};`, at);
      return e!;
    });
  };
  const safeChar = (cp: number, at: number): string => {
    if (!(cp > 0 && cp <= 0x10ffff)) err(`bad character reference ${cp}`, at);
    return String.fromCodePoint(cp);
  };
  const readName = (): string => {
    const s = i;
    if (i >= n || !NAME_START.test(text[i]!)) err(`expected a name, found ${show(text[i])}`);
    while (i < n && NAME_CHAR.test(text[i]!)) i++;
    return text.slice(s, i);
  };
  const skipWs = () => {
    while (i < n && /\s/.test(text[i]!)) advance(i + 1);
  };

  const stack: XmlElement[] = [];
  let root: XmlElement | null = null;
  while (i < n) {
    const c = text[i];
    if (c !== "<") {
      const j = text.indexOf("<", i);
      const end = j < 0 ? n : j;
      const raw = text.slice(i, end);
      if (raw.trim() !== "") {
        const top = stack[stack.length - 1];
        if (!top) err(`text outside the root element: ${show(raw.trim().slice(0, 20))}`);
        if (raw.includes("&")) decode(raw, i);
        top!.text = (top!.text + " " + decode(raw, i).trim()).trim();
      }
      advance(end);
      continue;
    }
    if (text.startsWith("<!--", i)) {
      skipUntil("-->", "comment");
      continue;
    }
    if (text.startsWith("<?", i)) {
      skipUntil("?>", "processing instruction");
      continue;
    }
    if (text.startsWith("<![CDATA[", i)) {
      const s = i + 9;
      const j = text.indexOf("]]>", s);
      if (j < 0) err("unterminated CDATA");
      const top = stack[stack.length - 1];
      if (!top) err("CDATA outside the root element");
      top!.text = (top!.text + text.slice(s, j)).trim();
      advance(j + 3);
      continue;
    }
    if (text.startsWith("<!", i)) {
      skipUntil(">", "declaration");
      continue;
    }
    if (text.startsWith("</", i)) {
      const at = i;
      i += 2;
      const name = readName();
      skipWs();
      if (text[i] !== ">") err(`expected '>' to close </${name}`);
      advance(i + 1);
      const top = stack.pop();
      if (!top) err(`closing tag </${name}> without an open element`, at);
      if (top!.name !== name) {
        err(`closing tag </${name}> does not match <${top!.name}> opened at line ${top!.line}`, at);
      }
      continue;
    }
    // start tag
    const at = i;
    const col = i - lineStart + 1;
    const ln = line;
    i++;
    const name = readName();
    const attrs: Record<string, string> = {};
    let selfClose = false;
    for (;;) {
      const before = i;
      skipWs();
      if (i >= n) err(`unterminated start tag <${name}`, at);
      if (text[i] === "/") {
        if (text[i + 1] !== ">") err(`expected '/>' in <${name}>`);
        advance(i + 2);
        selfClose = true;
        break;
      }
      if (text[i] === ">") {
        advance(i + 1);
        break;
      }
      if (i === before) err(`expected whitespace before attribute in <${name}>`);
      const an = readName();
      skipWs();
      if (text[i] !== "=") err(`attribute ${an} of <${name}> has no value`);
      advance(i + 1);
      skipWs();
      const q = text[i];
      if (q !== '"' && q !== "'") err(`attribute ${an} of <${name}>: value must be quoted`);
      const j = text.indexOf(q!, i + 1);
      if (j < 0) err(`unterminated value of attribute ${an}`);
      const raw = text.slice(i + 1, j);
      if (raw.includes("<")) err(`'<' inside the value of attribute ${an}`);
      if (Object.hasOwn(attrs, an)) err(`duplicate attribute ${an} in <${name}>`);
      attrs[an] = decode(raw, i);
      advance(j + 1);
    }
    const el: XmlElement = { name, attrs, children: [], text: "", line: ln, col };
    const parent = stack[stack.length - 1];
    if (parent) parent.children.push(el);
    else if (root) err(`second root element <${name}> (the first was <${root.name}>)`, at);
    else root = el;
    if (!selfClose) stack.push(el);
  }
  if (stack.length > 0) {
    const top = stack[stack.length - 1]!;
    throw new TopologyParseError(
      `element <${top.name}> is never closed`,
      top.line,
      top.col,
      source,
    );
  }
  if (!root) throw new TopologyParseError("no root element", line, i - lineStart + 1, source);
  return root;
}

const ENTITIES: Readonly<Record<string, string>> = {
  amp: "&",
  lt: "<",
  gt: ">",
  quot: '"',
  apos: "'",
};

function show(s: string | undefined): string {
  return s === undefined ? "end of input" : JSON.stringify(s);
}
