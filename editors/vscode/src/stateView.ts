// What answers now and how the last fine-tune ended, from the server's own fields
// (`ai-lsp.finetune.status` and the serving row of `ai-lsp.model.list`): never parsed from text.

/** The fields of `ai-lsp.finetune.status` this view reads. */
export interface ServerStatus {
  state?: string;
  backend?: string;
  servedModel?: string | null;
  lastRun?: { runId?: string; state?: string } | null;
}

/** A row of `ai-lsp.model.list`, as far as this view reads it. */
export interface ListedModel {
  label?: string;
  path: string;
  runId?: string | null;
  serving?: boolean;
}

/** Job states in which a run is going (ai_lsp_tune/server/finetune/states.py ACTIVE_STATES). */
export const ACTIVE_STATES = ['preparing', 'training', 'swapping', 'cancelling'];

/** The last run's end state -> its icon: a failure is never a check mark. */
export const OUTCOME_ICONS: Record<string, string> = {
  succeeded: '$(check)',
  rejected: '$(warning)',
  cancelled: '$(circle-slash)',
  failed: '$(error)',
};

export type Severity = 'info' | 'warning' | 'error';

export interface StateView {
  /** Status-bar text: short words only ("$(check) AI: fine-tune"), so nothing is cut mid-word. */
  text: string;
  /** What answers, named: "fine-tune tiny-model · 3 Dec 09:12", "base tiny-model", "teacher". */
  answers: string;
  /** The last run's outcome in words ("last fine-tune failed"), or "" before any run. */
  outcome: string;
  tooltip: string;
  severity: Severity;
  running: boolean;
}

const SEVERITY: Record<string, Severity> = { failed: 'error', rejected: 'warning' };

function baseName(path: string): string {
  return path.replace(/[\\/]+$/, '').split(/[\\/]/).pop() || path;
}

/** The view of the server's state; `models` may be undefined (not listed yet). */
export function stateView(status: ServerStatus, models?: ListedModel[]): StateView {
  const running = ACTIVE_STATES.includes(status.state ?? '');
  let short: string;
  let answers: string;
  if (status.backend === 'remote') {
    short = 'teacher';
    answers = 'the teacher (remote model)';
  } else if (!status.servedModel) {
    short = 'no model';
    answers = 'no local model (loading, or it failed to load)';
  } else {
    const row = models?.find((m) => m.serving) ?? models?.find((m) => m.path === status.servedModel);
    const label = row?.label ?? baseName(status.servedModel);
    const fineTune = row ? Boolean(row.runId) : false;
    short = fineTune ? 'fine-tune' : row ? 'base' : 'model';
    answers = fineTune ? `fine-tune ${label}` : row ? `base ${label}` : label;
  }
  const ended = running ? undefined : (status.lastRun?.state ?? status.state);
  const icon = running ? '$(sync~spin)' : (ended && OUTCOME_ICONS[ended]) || '$(hubot)';
  const outcome = running
    ? `fine-tune ${status.state}`
    : ended && OUTCOME_ICONS[ended] ? `last fine-tune ${ended}` : '';
  return {
    text: `${icon} AI: ${short}`,
    answers,
    outcome,
    tooltip: `AI LSP: ${answers} answers${outcome ? `; ${outcome}` : ''} (click for status)`,
    severity: running ? 'info' : SEVERITY[ended ?? ''] ?? 'info',
    running,
  };
}
