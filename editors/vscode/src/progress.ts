// `$/progress` from the server as a status-bar item: "AI 42% · training 2/3 · loss 0.84".

export interface ProgressValue {
  kind: 'begin' | 'report' | 'end';
  title?: string;
  message?: string;
  percentage?: number;
  cancellable?: boolean;
}

/** What the status-bar item shows; `null` text means "back to idle". */
export interface ProgressView {
  text: string;
  tooltip: string;
  active: boolean;
}

const IDLE: ProgressView = { text: '$(hubot) AI LSP', tooltip: 'AI LSP: show fine-tune status (the last run, with its before → after summary)', active: false };

/** Folds begin/report/end notifications into the status-bar text. */
export class ProgressTracker {
  private title = '';
  private message = '';
  private percentage: number | undefined;
  private active = false;

  update(value: ProgressValue): ProgressView {
    if (value.kind === 'begin') {
      this.title = value.title ?? '';
      this.message = value.message ?? '';
      this.percentage = value.percentage;
      this.active = true;
    } else if (value.kind === 'report') {
      this.message = value.message ?? this.message;
      this.percentage = value.percentage ?? this.percentage;
    } else {
      this.active = false;
      this.message = value.message ?? 'done';
      return {
        text: `$(check) AI LSP: ${phaseOf(this.message)}`,
        tooltip: `${this.title}: ${this.message}`,
        active: false,
      };
    }
    return this.view();
  }

  view(): ProgressView {
    if (!this.active) {
      return IDLE;
    }
    const pct = this.percentage === undefined ? '' : ` ${Math.round(this.percentage)}%`;
    const phase = phaseOf(this.message);
    return {
      text: `$(sync~spin) AI${pct}${phase ? ` · ${phase}` : ''}`,
      tooltip: `${this.title}${this.message ? `: ${this.message}` : ''} (click for status)`,
      active: true,
    };
  }

  idle(): ProgressView {
    this.active = false;
    return IDLE;
  }
}

/** The phase part of a progress message: "42% · training 2/3 · loss 0.84" -> "training 2/3". */
export function phaseOf(message: string): string {
  const parts = message
    .split('·')
    .map((p) => p.trim())
    .filter((p) => p && !/^\d+(\.\d+)?\s*%$/.test(p));
  return parts[0] ?? '';
}
