-- Headless Neovim end-to-end script for tests/test_editor_nvim.py.
--
-- Run as `nvim --headless -u nvim_e2e.lua` with AI_LSP_E2E_CONFIG pointing at a JSON plan
-- (plugin dir, server cmd, settings, file to open, timeouts). It drives the real plugin and the
-- real server like a user would and writes everything it observed to plan.out (JSON); pytest
-- asserts on that file. A global timer guarantees an exit code even if something hangs.
local h = dofile(vim.fs.dirname(debug.getinfo(1, 'S').source:sub(2)) .. '/nvim_harness.lua')
local plan = h.plan
local now, write_out, finish = h.now, h.write_out, h.finish

local obs = h.observe({
  steps = {},
  diagnostics = {}, -- every change of our diagnostics: {t, items = {{lnum, message, source}}}
  progress = {}, -- {t, token, kind, title, message, percentage}
  messages = {}, -- window/showMessageRequest from our server: {t, message, actions}
  selects = {}, -- what vim.ui.select was asked (the swap message's actions)
  notifications = {}, -- vim.notify calls: {t, msg, level}
  statusline = {}, -- require('ai_lsp').statusline() sampled during the run
  statusline_at_end = {}, -- token -> the statusline as the progress ended
  health = {}, -- the :checkhealth ai_lsp report's lines
  results = {}, -- command answers
})

local function step(name, data)
  table.insert(obs.steps, { t = now(), name = name, data = data })
  write_out()
end

-- Observe what a user would see.
local real_notify = vim.notify
vim.notify = function(msg, level, opts)
  table.insert(obs.notifications, { t = now(), msg = tostring(msg), level = level })
  return real_notify(msg, level, opts)
end
-- Answer the swap message like a user who reads it and keeps the new model (dismisses it).
-- A picker (:AiLspModels) is recorded as the user reads it: its lines, and the rows behind them.
vim.ui.select = function(items, opts, on_choice)
  local titles = vim.tbl_map(function(item)
    if opts and opts.format_item then
      return opts.format_item(item)
    end
    return type(item) == 'table' and item.title or tostring(item)
  end, items)
  table.insert(obs.selects, { t = now(), prompt = opts and opts.prompt, items = titles, rows = items })
  on_choice(nil, nil)
end

vim.api.nvim_create_autocmd('User', {
  pattern = 'AiLspMessage',
  callback = function(ev)
    local actions = vim.tbl_map(function(a) return a.title end, ev.data.actions or {})
    table.insert(obs.messages, { t = now(), message = ev.data.message, actions = actions })
  end,
})
local bufnr
local function our_diagnostics()
  return vim.tbl_filter(function(d)
    return d.source == 'ai-lsp'
  end, vim.diagnostic.get(bufnr))
end
vim.api.nvim_create_autocmd('DiagnosticChanged', {
  callback = function(ev)
    if ev.buf ~= bufnr then
      return
    end
    local items = vim.tbl_map(function(d)
      return { lnum = d.lnum, col = d.col, end_lnum = d.end_lnum, end_col = d.end_col,
        message = d.message, source = d.source, severity = d.severity }
    end, our_diagnostics())
    table.insert(obs.diagnostics, { t = now(), items = items })
  end,
})

--- Replace the whole buffer, as a user rewriting the file would.
local function set_text(text)
  vim.api.nvim_buf_set_lines(bufnr, 0, -1, false, vim.split(text, '\n', { trimempty = true }))
end

--- Wait for `cond`; on timeout end the run with `reason` (exit code 2).
local function wait(ms, cond, reason)
  return h.wait(ms, cond, reason, 50)
end

--- The token of the first progress that began after obs.progress[from].
local function token_after(from)
  for i = from + 1, #obs.progress do
    if obs.progress[i].kind == 'begin' then
      return obs.progress[i].token
    end
  end
end

local function progress_of(token)
  return vim.tbl_filter(function(p) return p.token == token end, obs.progress)
end

local function ended(token)
  return vim.iter(progress_of(token)):any(function(p) return p.kind == 'end' end)
end

--- The first notification since `t` whose text holds `text`.
local function notified(t, text)
  return vim.iter(obs.notifications):find(function(n)
    return n.t > t and n.msg:find(text, 1, true) ~= nil
  end)
end

--- Ask the server for its status; stored in obs.results[key]. False on a timeout.
local function status_into(key)
  obs.results[key] = nil
  require('ai_lsp').exec(require('ai_lsp').commands.status, nil, function(result)
    obs.results[key] = result
  end)
  return wait(10000, function() return obs.results[key] ~= nil end, 'the status answer ' .. key)
end

--- After the first swap: a long run cancelled mid-training, a run with changed settings (fresh,
--- from the base again), :checkhealth, the model list, and two rollbacks down to the base.
--- Every step through the user commands; returns false when it ended the run.
local function lineage_story(L)
  local ai = require('ai_lsp')
  ai.update_settings(L.long_settings)
  local from = #obs.progress
  vim.cmd('AiLspFinetune')
  local token
  if not wait(L.timeout_ms, function()
    token = token_after(from)
    return token ~= nil and vim.iter(progress_of(token)):any(function(p)
      -- a training step done (not only the validation at 0): cancelling keeps a checkpoint
      return (p.message or ''):find('training [1-9]%d*/') ~= nil
    end)
  end, 'the long run to train') then return false end
  local cancel_at = now()
  obs.cancel_at = cancel_at
  vim.cmd('AiLspFinetuneCancel')
  if not wait(L.timeout_ms, function() return ended(token) end, 'the cancelled run to end') then
    return false
  end
  if not wait(plan.message_timeout_ms, function()
    return notified(cancel_at, 'Fine-tune cancelled') ~= nil
  end, "the cancel's end state") then return false end
  obs.cancelled_token = token
  step('cancelled', { token = token })

  ai.update_settings(L.changed_settings)
  local fresh_at = now()
  obs.fresh_at = fresh_at
  from = #obs.progress
  local messages = #obs.messages
  vim.cmd('AiLspFinetune')
  if not wait(L.timeout_ms, function()
    token = token_after(from)
    return token ~= nil and ended(token) and #obs.messages > messages
  end, 'the run with changed settings to swap') then return false end
  obs.fresh_token = token
  step('second_swap', { token = token })
  if not status_into('status_after_second_swap') then return false end

  -- :checkhealth waits 3 s for the server's status; on a busy machine the user runs it again,
  -- as its advice says, until the report has the server's answer.
  if not wait(30000, function()
    vim.cmd('checkhealth ai_lsp')
    obs.health = vim.api.nvim_buf_get_lines(0, 0, -1, false)
    vim.cmd('bwipeout!')
    vim.api.nvim_set_current_buf(bufnr)
    return vim.iter(obs.health):any(function(line)
      return line:find('trace file:', 1, true) ~= nil
    end)
  end, 'the :checkhealth ai_lsp report') then return false end
  step('checkhealth')

  local selects = #obs.selects
  vim.cmd('AiLspModels')
  if not wait(10000, function() return #obs.selects > selects end, 'the model list') then
    return false
  end
  step('models')

  -- The first fine-tune picked again; "Roll back" then steps down its lineage (to the base, not
  -- to the second fine-tune served in between), and at the base there is nothing to roll back to.
  local used_at = now()
  vim.cmd('AiLspUseModel ' .. vim.fn.fnameescape(obs.results.status_after_swap.servedModel))
  if not wait(L.timeout_ms, function() return notified(used_at, 'Now serving') ~= nil end,
    'the first fine-tune to serve again') then return false end
  for i, said in ipairs({ 'Rolled back to', 'No previous model' }) do
    local at = now()
    vim.cmd('AiLspRollback')
    if not wait(L.timeout_ms, function() return notified(at, said) ~= nil end,
      'rollback ' .. i) then return false end
    if not status_into('status_after_rollback_' .. i) then return false end
  end
  step('rolled_back_twice')
  return true
end

--- Registered in run(), after plugin/ai_lsp.lua (sourced after this -u script) registered the
--- plugin's own LspProgress handler: the statusline is sampled after the plugin saw the event.
local function observe_progress()
  vim.api.nvim_create_autocmd('LspProgress', {
    callback = function(ev)
      local client = vim.lsp.get_client_by_id(ev.data.client_id)
      if not client or client.name ~= 'ai_lsp' then
        return
      end
      local value = ev.data.params.value or {}
      table.insert(obs.progress, {
        t = now(),
        token = tostring(ev.data.params.token),
        kind = value.kind, -- not ev.match: the pattern is the kind only since 0.11 for some events
        title = value.title,
        message = value.message,
        percentage = value.percentage,
      })
      table.insert(obs.statusline, require('ai_lsp').statusline())
      if value.kind == 'end' then
        obs.statusline_at_end[tostring(ev.data.params.token)] = require('ai_lsp').statusline()
      end
    end,
  })
end

local function run()
  observe_progress()
  require('ai_lsp').setup({ cmd = plan.cmd, settings = plan.settings, filetypes = { 'python' } })
  vim.cmd.edit(vim.fn.fnameescape(plan.file))
  bufnr = vim.api.nvim_get_current_buf()
  step('opened', { filetype = vim.bo[bufnr].filetype })

  local client
  if not wait(plan.start_timeout_ms, function()
    client = require('ai_lsp').client()
    return client ~= nil and client.initialized
  end, 'the server to start') then return end
  local provider = client.server_capabilities.executeCommandProvider or {}
  step('initialized', { commands = provider.commands or {} })

  if not wait(plan.diagnostic_timeout_ms, function()
    return #our_diagnostics() > 0
  end, 'a first diagnostic') then return end
  step('first_diagnostic')

  -- Edits a user makes while working: each one is analysed and recorded as a trace.
  for i, text in ipairs(plan.edits or {}) do
    local before = #obs.diagnostics
    set_text(text)
    if not wait(plan.diagnostic_timeout_ms, function()
      return #obs.diagnostics > before and #our_diagnostics() > 0
    end, 'diagnostics after edit ' .. i) then return end
  end
  step('edited', { count = #(plan.edits or {}) })

  if plan.before_finetune_settings then
    -- e.g. from the teacher (remote) to the local model that will learn from its traces
    require('ai_lsp').update_settings(plan.before_finetune_settings)
    step('settings_changed', plan.before_finetune_settings)
  end
  if plan.base_probe_text then
    -- What the model being fine-tuned finds before it learns from the traces.
    obs.base_probe_at = now()
    set_text(plan.base_probe_text)
    if not wait(plan.diagnostic_timeout_ms, function()
      local last = obs.diagnostics[#obs.diagnostics]
      return last ~= nil and last.t > obs.base_probe_at
    end, 'diagnostics from the base model') then return end
    step('base_probe')
  end
  if not require('ai_lsp').supports(client, 'ai-lsp.finetune') then
    return finish(5, 'the server does not advertise ai-lsp.finetune')
  end
  vim.cmd('AiLspFinetune')
  step('finetune_sent')
  if not wait(plan.finetune_timeout_ms, function()
    for _, p in ipairs(obs.progress) do
      if p.kind == 'end' then
        return true
      end
    end
    return false
  end, 'fine-tune progress to end') then return end
  step('progress_ended')

  if not wait(plan.message_timeout_ms, function()
    return #obs.messages > 0
  end, 'the swap message') then return end
  step('swap_message')

  require('ai_lsp').exec(require('ai_lsp').commands.status, nil, function(result)
    obs.results.status_after_swap = result
  end)
  if not wait(10000, function() return obs.results.status_after_swap ~= nil end,
    'the status answer') then return end

  -- A later edit: analysed by whatever the server now serves.
  local swapped_at = now()
  obs.swapped_at = swapped_at
  set_text(plan.after_swap_text)
  if not wait(plan.after_swap_timeout_ms or plan.diagnostic_timeout_ms, function()
    local last = obs.diagnostics[#obs.diagnostics]
    return last ~= nil and last.t > swapped_at and (not plan.expect_items_after_swap or #last.items > 0)
  end, 'diagnostics after the swap') then return end
  step('diagnostics_after_swap', obs.diagnostics[#obs.diagnostics])

  if plan.lineage and not lineage_story(plan.lineage) then return end

  -- Stop the server and wait for its exit, so its trace export is complete for pytest to read
  -- (shutdown flushes the spans; :qall would not wait for that).
  local exited = false
  vim.api.nvim_create_autocmd('LspDetach', {
    callback = function(ev)
      exited = exited or ev.data.client_id == client.id
    end,
  })
  client:stop()
  if not wait(15000, function() return exited end, 'the server to exit') then return end
  step('server_stopped')
  finish(0, 'done')
end

h.run(run)
