// A one-line progress bar for long runs: steps done of the steps planned, the current step's label, the
// time elapsed. Drawn on stderr only when stderr is a terminal (logs and CI output stay plain); log lines
// erase it first and it is redrawn after them.
export class Progress {
  readonly #out: NodeJS.WriteStream;
  readonly #enabled: boolean;
  readonly #t0 = Date.now();
  #total = 0;
  #done = 0;
  #label = '';
  #drawn = false;

  constructor(out: NodeJS.WriteStream = process.stderr, enabled = out.isTTY === true) {
    this.#out = out;
    this.#enabled = enabled;
  }

  /** Adds steps to the plan (each suite adds its own when it starts). */
  plan(steps: number): void {
    this.#total += Math.max(0, steps);
    this.#draw();
  }

  /** One step is starting: shows its label. */
  step(label: string): void {
    this.#label = label;
    this.#draw();
  }

  /** The step finished. */
  tick(): void {
    this.#done = Math.min(this.#total, this.#done + 1);
    this.#draw();
  }

  /** Writes a log line above the bar. */
  log(line: string): void {
    this.clear();
    this.#out.write(`${line}\n`);
    this.#draw();
  }

  clear(): void {
    if (this.#enabled && this.#drawn) this.#out.write('\r\x1b[2K');
    this.#drawn = false;
  }

  /** The bar as text (exposed for tests): "[#####-----] 5/10  label  12s". */
  render(width = 24): string {
    const frac = this.#total > 0 ? this.#done / this.#total : 0;
    const full = Math.round(frac * width);
    const secs = Math.round((Date.now() - this.#t0) / 1000);
    return `[${'#'.repeat(full)}${'-'.repeat(width - full)}] ${this.#done}/${this.#total}  ${this.#label}  ${secs}s`;
  }

  #draw(): void {
    if (!this.#enabled) return;
    const cols = this.#out.columns ?? 100;
    this.#out.write(`\r\x1b[2K${this.render().slice(0, Math.max(10, cols - 1))}`);
    this.#drawn = true;
  }
}
