// `$/progress` from the server as a status-bar item: "AI 42% · training 2/3".

/**
 * What the server says about where its work stands, beside the standard fields of `$/progress`
 * (`value.aiLsp`): shown as given, never parsed out of the human message.
 */
export interface ProgressFields {
  phase: string;
  percent: number;
  step?: number;
  totalSteps?: number;
  loss?: number;
  valLoss?: number;
  tokensPerSecond?: number;
  etaSeconds?: number;
  note?: string;
  /** How the work ended (`end` only): "now serving the fine-tuned model", "cancelled", ... */
  outcome?: string;
  message: string;
}

export interface ProgressValue {
  kind: 'begin' | 'report' | 'end';
  title?: string;
  message?: string;
  percentage?: number;
  cancellable?: boolean;
  aiLsp?: ProgressFields;
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
  private fields: ProgressFields | undefined;
  private active = false;

  update(value: ProgressValue): ProgressView {
    if (value.kind === 'begin') {
      this.title = value.title ?? '';
      this.message = value.message ?? '';
      this.percentage = value.percentage;
      this.fields = value.aiLsp;
      this.active = true;
    } else if (value.kind === 'report') {
      this.message = value.message ?? this.message;
      this.percentage = value.percentage ?? this.percentage;
      this.fields = value.aiLsp ?? this.fields;
    } else {
      this.active = false;
      this.message = value.message ?? 'done';
      return {
        text: `$(check) AI LSP: ${value.aiLsp?.outcome ?? this.message}`,
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
    const phase = this.fields ? phaseOf(this.fields) : '';
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

/** Where the work stands, short: "training 2/3", "evaluating", "preparing". */
export function phaseOf(fields: ProgressFields): string {
  const steps = fields.step !== undefined && fields.totalSteps ? ` ${fields.step}/${fields.totalSteps}` : '';
  return `${fields.phase}${steps}`;
}
