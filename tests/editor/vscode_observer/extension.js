// Test-only extension: acts like a user through the VS Code API (open a file, run the palette
// command, edit) and writes what it observed to the JSON file named in AI_LSP_E2E_CONFIG.
const fs = require('fs');
const vscode = require('vscode');

exports.activate = async function activate() {
  const configPath = process.env.AI_LSP_E2E_CONFIG;
  if (!configPath) return;
  const plan = JSON.parse(fs.readFileSync(configPath, 'utf8'));
  const obs = { steps: [], diagnostics: [], results: {}, notices: [], status_items: [] };
  const now = () => Date.now() / 1000;
  const save = () => fs.writeFileSync(plan.out, JSON.stringify(obs));
  const step = (name, data) => { obs.steps.push({ t: now(), name, data }); save(); };
  const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
  async function waitFor(ms, cond, what) {
    const end = Date.now() + ms;
    while (Date.now() < end) {
      const value = await cond();
      if (value) return value;
      await sleep(200);
    }
    throw new Error(`timed out waiting for ${what}`);
  }
  // What the user sees on screen, read from the workbench page over the DevTools protocol
  // (the headless Chromium's remote-debugging port): notifications, the quick pick's rows.
  let evaluate;
  async function screen(expression) {
    if (!evaluate) {
      const file = `${plan.chromium_dir}/DevToolsActivePort`;
      const port = await waitFor(10000, () => fs.existsSync(file) && fs.readFileSync(file, 'utf8').split('\n')[0],
        'the DevTools port');
      const pages = await (await fetch(`http://127.0.0.1:${port}/json/list`)).json();
      const page = pages.find((p) => p.type === 'page');
      const ws = new WebSocket(page.webSocketDebuggerUrl);
      await new Promise((resolve, reject) => { ws.onopen = resolve; ws.onerror = reject; });
      const pending = new Map();
      let id = 0;
      ws.onmessage = (ev) => {
        const reply = JSON.parse(ev.data);
        pending.get(reply.id)?.(reply);
        pending.delete(reply.id);
      };
      evaluate = (expr) => new Promise((resolve) => {
        pending.set(++id, (reply) => resolve(reply.result?.result?.value));
        ws.send(JSON.stringify({ id, method: 'Runtime.evaluate', params: { expression: expr, returnByValue: true } }));
      });
    }
    return evaluate(expression);
  }
  const NOTICES = `[...document.querySelectorAll('.notifications-center .notification-list-item-message')].map((e) => e.innerText)`;
  /** Wait for a notification whose text holds every one of `parts`; its text. Read in the
   * notification centre (the bell's list): a toast may never show (VS Code shows at most three
   * within 800 ms) or hide itself, the centre lists every notification, the newest first. */
  async function notice(parts, what) {
    await vscode.commands.executeCommand('notifications.showList');
    try {
      const shown = await waitFor(plan.message_timeout_ms, async () => {
        const texts = (await screen(NOTICES)) || [];
        return texts.find((t) => parts.every((part) => t.includes(part)));
      }, what);
      obs.notices.push({ t: now(), text: shown });
      save();
      return shown;
    } finally {
      await vscode.commands.executeCommand('notifications.hideList');
    }
  }

  /** The extension's status-bar item as shown: its text and its icons' classes. */
  const STATUS_ITEM = `[...document.querySelectorAll('.statusbar-item')].map((e) => ({ text: e.innerText,
    icons: [...e.querySelectorAll('.codicon')].map((c) => c.className) })).find((x) => x.text.includes('AI:'))`;
  async function statusItem(what, cond) {
    const shown = await waitFor(30000, async () => {
      const item = await screen(STATUS_ITEM);
      return item && cond(item) ? item : undefined;
    }, what);
    obs.status_items.push({ t: now(), what, ...shown });
    save();
    return shown;
  }
  /** Click `title` on the notification whose text holds every one of `parts`, as a user would;
   * the titles of all its buttons. */
  async function clickButton(parts, title, what) {
    await vscode.commands.executeCommand('notifications.showList');
    try {
      return await waitFor(plan.message_timeout_ms, () => screen(`(() => {
        const items = [...document.querySelectorAll('.notifications-center .notification-list-item')];
        const item = items.find((e) => ${JSON.stringify(parts)}.every((p) =>
          (e.querySelector('.notification-list-item-message')?.innerText || '').includes(p)));
        const buttons = item ? [...item.querySelectorAll('.monaco-button')] : [];
        const button = buttons.find((b) => b.innerText.trim() === ${JSON.stringify(title)});
        if (!button) return undefined;
        button.click();
        return buttons.map((b) => b.innerText.trim());
      })()`), what);
    } finally {
      await vscode.commands.executeCommand('notifications.hideList');
    }
  }
  /** Rows of the command palette for `query` (an empty list when none match). */
  async function paletteRows(query) {
    void vscode.commands.executeCommand('workbench.action.quickOpen', `>${query}`);
    await sleep(1500);  // the palette filters as it opens
    const rows = await screen(
      `[...document.querySelectorAll('.quick-input-widget .quick-input-list .monaco-list-row')].map((r) => r.innerText)`);
    await vscode.commands.executeCommand('workbench.action.closeQuickOpen');
    return rows || [];
  }

  // After the first swap: a long run cancelled mid-training, a run with changed settings (fresh,
  // from the base again), the model list, and two rollbacks (the swap notification's button, then
  // the palette) down to the base. Every step through the extension's palette commands.
  async function lineageStory(L, status, first) {
    const config = () => vscode.workspace.getConfiguration('aiLsp');
    const settle = async (settings) => {
      for (const [key, value] of Object.entries(settings)) {
        await config().update(key, value, vscode.ConfigurationTarget.Global);
      }
    };
    await settle(L.long_settings);
    obs.results.long_run = await vscode.commands.executeCommand('aiLsp.finetune');
    await waitFor(L.timeout_ms, async () => {
      const s = await status();
      return s && s.runId === obs.results.long_run.runId && /training [1-9]\d*\//.test(s.progress?.message || '');
    }, 'the long run to train');  // a step done (not only the validation at 0): a checkpoint
    obs.cancel_at = now();
    obs.palette_while_running = await paletteRows('Stop the running fine-tune');
    obs.results.cancel = await vscode.commands.executeCommand('aiLsp.finetuneCancel');
    obs.results.status_after_cancel = await waitFor(L.timeout_ms, async () => {
      const s = await status();
      return s && s.state === 'cancelled' ? s : undefined;
    }, 'the cancelled run to end');
    obs.cancel_notice = await notice(['Fine-tune cancelled at', 'resumes from its checkpoint'],
      "the cancel's end state");
    obs.palette_after_cancel = await paletteRows('Stop the running fine-tune');
    step('cancelled');

    await settle(L.changed_settings);
    obs.fresh_at = now();
    obs.results.fresh = await vscode.commands.executeCommand('aiLsp.finetune');
    obs.fresh_notice = await notice(['starting fresh'], 'the fresh start said');
    obs.results.status_after_second_swap = await waitFor(L.timeout_ms, async () => {
      const s = await status();
      return s && s.runId === obs.results.fresh.runId && ['succeeded', 'failed', 'rejected', 'cancelled'].includes(s.state)
        ? s : undefined;
    }, 'the run with changed settings to finish');
    step('second_swap');

    // The swap notification's primary action, as a user clicking it: "Roll back".
    await vscode.commands.executeCommand('notification.acceptPrimaryAction');
    obs.results.status_after_rollback_1 = await waitFor(plan.rollback_timeout_ms, async () => {
      const s = await status();
      return s && s.servedModel === L.base_model ? s : undefined;
    }, 'the roll back chosen in the swap notification');
    obs.rollback_notices = [await notice(['Rolled back to', L.base_name], 'the first rollback said')];

    // "AI LSP: Choose a model": the quick pick as the user sees it, then dismissed.
    obs.results.models = await vscode.commands.executeCommand('ai-lsp.model.list');
    const picked = vscode.commands.executeCommand('aiLsp.models');
    // Its rows once its title shows (the palette opened earlier left its rows in the same widget)
    obs.model_rows = await waitFor(10000, () => screen(
      `(document.querySelector('.quick-input-widget .quick-input-title')?.innerText || '').includes('models of this workspace')
        ? [...document.querySelectorAll('.quick-input-widget .quick-input-list .monaco-list-row')].map((r) => r.innerText)
        : undefined`,
    ).then((rows) => (rows && rows.length >= obs.results.models.models.length ? rows : undefined)),
    'the model quick pick');
    obs.model_row_active = await screen(
      `document.querySelector('.quick-input-widget .quick-input-list .monaco-list-row.focused')?.innerText`,
    );
    await vscode.commands.executeCommand('workbench.action.closeQuickOpen');
    await picked;
    step('models');

    await vscode.commands.executeCommand('aiLsp.rollback');
    obs.results.status_after_rollback_2 = await status();
    obs.rollback_notices.push(await notice(['AI LSP: No previous model', L.base_name], 'the second rollback said'));
    await statusItem('the base again in the status bar', (s) => s.text.includes('AI: base'));
    step('rolled_back_twice');

    // "Restart server" says when the server is back
    await vscode.commands.executeCommand('aiLsp.restart');
    obs.restart_notice = await notice(['AI LSP: server restarted'], 'the restart said');
    step('restarted');
  }

  try {
    const uri = vscode.Uri.file(plan.file);
    const ours = () => vscode.languages.getDiagnostics(uri).filter((d) => d.source === 'ai-lsp');
    vscode.languages.onDidChangeDiagnostics((e) => {
      if (e.uris.some((u) => u.fsPath === uri.fsPath)) {
        obs.diagnostics.push({ t: now(), items: ours().map((d) => ({
          line: d.range.start.line, character: d.range.start.character,
          endLine: d.range.end.line, endCharacter: d.range.end.character, message: d.message,
        })) });
        save();
      }
    });
    const doc = await vscode.workspace.openTextDocument(uri);
    let editor = await vscode.window.showTextDocument(doc);
    step('opened', { languageId: doc.languageId });
    await waitFor(plan.diagnostic_timeout_ms, () => ours().length > 0, 'a first diagnostic');
    step('first_diagnostic');

    // Rewrite the whole file, as a user would; resolve with the first diagnostics published
    // after it (those with items, when `withItems`).
    async function rewrite(text, what, withItems, ms = plan.diagnostic_timeout_ms) {
      const at = now();
      const whole = new vscode.Range(0, 0, doc.lineCount, 0);
      await editor.edit((b) => b.replace(whole, text));
      return waitFor(ms,
        () => obs.diagnostics.find((d) => d.t > at && (!withItems || d.items.length > 0)), what);
    }
    // Edits a user makes while working: each one is analysed and recorded as a trace.
    for (const [i, text] of (plan.edits || []).entries()) {
      await rewrite(text, `diagnostics after edit ${i + 1}`, true);
    }
    step('edited', { count: (plan.edits || []).length });
    // The server's own command (registered by the language client) answers quietly.
    const status = () => vscode.commands.executeCommand('ai-lsp.finetune.status');

    const config = vscode.workspace.getConfiguration('aiLsp');
    if (plan.refusals) {
      // Fine-tune while the teacher serves: refused naming aiLsp.backend, with "Switch to local".
      await statusItem('the teacher in the status bar', (s) => s.text.includes('AI: teacher'));
      obs.results.refused = await vscode.commands.executeCommand('aiLsp.finetune') ?? null;
      obs.refusal_buttons = await clickButton(['aiLsp.backend'], 'Switch to local', 'the refusal with Switch to local');
      await waitFor(10000, () => vscode.workspace.getConfiguration('aiLsp').get('backend') === 'local',
        'Switch to local to set aiLsp.backend');
      await statusItem('the base in the status bar', (s) => s.text.includes('AI: base'));
      step('switched_to_local');

      // An invalid setting starts no run; its toast opens the Settings UI at that setting.
      const before = await status();
      const rate = config.inspect('finetune.learningRate').globalValue;
      await config.update('finetune.learningRate', -1, vscode.ConfigurationTarget.Global);
      obs.results.invalid = await vscode.commands.executeCommand('aiLsp.finetune') ?? null;
      obs.invalid_buttons = await clickButton(['invalid setting aiLsp.finetune.learningRate', 'fix it to fine-tune'], 'Open Settings',
        'the refusal naming the setting');
      obs.settings_rows = await waitFor(10000, () => screen(
        `[...document.querySelectorAll('.settings-editor .setting-item-contents .setting-item-label')].map((e) => e.innerText)`,
      ).then((rows) => (rows && rows.length > 0 ? rows : undefined)), 'the Settings UI at the setting');
      // The workbench draws the Settings UI before the extension host hears of its tab: wait for
      // the tab to be the active one (else the label of the editor it replaced is recorded).
      const activeLabel = () => vscode.window.tabGroups.activeTabGroup.activeTab?.label;
      obs.settings_tab = await waitFor(10000, () => (activeLabel() === 'Settings' ? 'Settings' : undefined),
        'the Settings tab to be active').catch(() => activeLabel());
      const after = await status();
      obs.results.invalid_status = { before: before.runId ?? null, after: after.runId ?? null, state: after.state };
      await vscode.commands.executeCommand('workbench.action.closeActiveEditor');
      await config.update('finetune.learningRate', rate, vscode.ConfigurationTarget.Global);
      editor = await vscode.window.showTextDocument(doc);
      step('invalid_setting_refused');
    }
    for (const [key, value] of Object.entries(plan.before_finetune_settings || {})) {
      await config.update(key, value, vscode.ConfigurationTarget.Global);
    }
    step('settings_changed');
    if (plan.base_probe_text) {
      // What the model being fine-tuned finds before it learns from the traces.
      step('base_probe', await rewrite(plan.base_probe_text, 'diagnostics from the base model', false));
    }
    obs.results.finetune = await vscode.commands.executeCommand('aiLsp.finetune');
    step('finetune_sent', obs.results.finetune);
    const final = await waitFor(plan.finetune_timeout_ms, async () => {
      const s = await status();
      return s && ['succeeded', 'failed', 'rejected', 'cancelled'].includes(s.state) ? s : undefined;
    }, 'the fine-tune to finish');
    obs.results.status_after = final;
    step('finetune_done', final);
    // 'succeeded' is set once the new model serves: its re-analysis of the open file (on the
    // change of model) may end before the status bar shows it.
    obs.swapped_at = now();
    await statusItem('the fine-tune and its outcome in the status bar',
      (s) => s.text.includes('AI: fine-tune') && s.icons.some((c) => c.includes('codicon-check')));

    step('diagnostics_after_swap', await rewrite(
      plan.after_swap_text, 'diagnostics after the swap', true, plan.after_swap_timeout_ms));
    obs.after_swap_until = now();  // later steps change the model (and re-analyse open files)

    if (plan.lineage) {
      await lineageStory(plan.lineage, status, final);
    } else {
      // The swap notification's primary action, as a user clicking it: "Roll back".
      await vscode.commands.executeCommand('notification.acceptPrimaryAction');
      obs.results.status_after_rollback = await waitFor(plan.rollback_timeout_ms, async () => {
        const s = await status();
        return s && s.servedModel !== final.servedModel ? s : undefined;
      }, 'the roll back chosen in the swap notification');
      step('rolled_back', obs.results.status_after_rollback);
    }
    obs.done = true;
  } catch (err) {
    obs.error = String(err && err.stack || err);
  }
  save();
};
