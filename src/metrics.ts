/**
 * A small Prometheus registry: counters, gauges and histograms with labels,
 * rendered in the text exposition format (version 0.0.4). One per app instance.
 */

type Labels = Record<string, string>;
type Samples = Array<{ labels?: Labels; value: number }>;
/** Computes a gauge's samples at scrape time (may read the store). */
type Collector = () => Samples | Promise<Samples>;

interface Family {
  name: string;
  help: string;
  type: "counter" | "gauge" | "histogram";
  /** Series keyed by their rendered label set. */
  series: Map<string, { labels: Labels; value: number; buckets?: number[]; sum?: number }>;
  bounds?: number[];
  /** Gauges computed when scraped. */
  collect?: Collector;
}

/** A counter: only goes up. */
export interface Counter {
  inc(labels?: Labels, by?: number): void;
}
/** A gauge: set to a value. */
export interface Gauge {
  set(value: number, labels?: Labels): void;
}
/** A histogram of observations (seconds, sizes). */
export interface Histogram {
  observe(value: number, labels?: Labels): void;
}

/** Holds every metric family of one ringhook instance. */
export class Registry {
  #families = new Map<string, Family>();

  /** Registers (or returns) a counter. */
  counter(name: string, help: string): Counter {
    const f = this.#family(name, help, "counter");
    return {
      inc: (labels = {}, by = 1) => {
        const s = this.#series(f, labels);
        s.value += by;
      },
    };
  }

  /** Registers (or returns) a gauge. */
  gauge(name: string, help: string): Gauge {
    const f = this.#family(name, help, "gauge");
    return { set: (value, labels = {}) => void (this.#series(f, labels).value = value) };
  }

  /** Registers a gauge whose values are computed at scrape time. */
  collect(name: string, help: string, fn: Collector): void {
    const f = this.#family(name, help, "gauge");
    f.collect = fn;
  }

  /** Registers (or returns) a histogram with the given upper bounds. */
  histogram(name: string, help: string, bounds: number[]): Histogram {
    const f = this.#family(name, help, "histogram");
    f.bounds = bounds;
    return {
      observe: (value, labels = {}) => {
        const s = this.#series(f, labels);
        s.buckets ??= new Array(bounds.length).fill(0);
        s.sum = (s.sum ?? 0) + value;
        s.value += 1;
        for (let i = 0; i < bounds.length; i++) if (value <= bounds[i]) s.buckets[i]++;
      },
    };
  }

  /** Renders every family in the Prometheus text format. */
  async render(): Promise<string> {
    const out: string[] = [];
    for (const f of this.#families.values()) {
      const samples = f.collect ? await safeCollect(f.collect) : [];
      out.push(`# HELP ${f.name} ${f.help}`, `# TYPE ${f.name} ${f.type}`);
      if (f.collect) {
        for (const { labels, value } of samples) {
          out.push(`${f.name}${fmtLabels(labels ?? {})} ${fmtNum(value)}`);
        }
      }
      for (const s of f.series.values()) {
        if (f.type !== "histogram") {
          out.push(`${f.name}${fmtLabels(s.labels)} ${fmtNum(s.value)}`);
          continue;
        }
        const bounds = f.bounds ?? [];
        for (let i = 0; i < bounds.length; i++) {
          const l = fmtLabels({ ...s.labels, le: fmtNum(bounds[i]) });
          out.push(`${f.name}_bucket${l} ${s.buckets?.[i] ?? 0}`);
        }
        out.push(`${f.name}_bucket${fmtLabels({ ...s.labels, le: "+Inf" })} ${s.value}`);
        out.push(`${f.name}_sum${fmtLabels(s.labels)} ${fmtNum(s.sum ?? 0)}`);
        out.push(`${f.name}_count${fmtLabels(s.labels)} ${s.value}`);
      }
    }
    return out.join("\n") + "\n";
  }

  /** The current value of a counter or gauge series (for tests and the CLI). */
  value(name: string, labels: Labels = {}): number {
    const want = fmtLabels(labels);
    for (const s of this.#families.get(name)?.series.values() ?? []) {
      if (fmtLabels(s.labels) === want) return s.value;
    }
    return 0;
  }

  #family(name: string, help: string, type: Family["type"]): Family {
    let f = this.#families.get(name);
    if (!f) {
      f = { name, help, type, series: new Map() };
      this.#families.set(name, f);
    }
    return f;
  }

  #series(f: Family, labels: Labels) {
    // A cheap key on the hot path (callers pass labels in a stable order); render() sorts.
    let key = "";
    for (const k in labels) key += k + "\u0000" + labels[k] + "\u0001";
    let s = f.series.get(key);
    if (!s) {
      s = { labels: { ...labels }, value: 0 };
      f.series.set(key, s);
    }
    return s;
  }
}

async function safeCollect(fn: Collector): Promise<Samples> {
  try {
    return await fn();
  } catch {
    return [];
  }
}

function fmtLabels(labels: Labels): string {
  const keys = Object.keys(labels).sort();
  if (keys.length === 0) return "";
  const esc = (v: string) => v.replace(/\\/g, "\\\\").replace(/\n/g, "\\n").replace(/"/g, '\\"');
  return `{${keys.map((k) => `${k}="${esc(labels[k])}"`).join(",")}}`;
}

function fmtNum(n: number): string {
  if (Number.isNaN(n)) return "NaN";
  if (n === Infinity) return "+Inf";
  if (n === -Infinity) return "-Inf";
  return String(n);
}
