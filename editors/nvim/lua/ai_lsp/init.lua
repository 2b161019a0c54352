--- ai_lsp: a thin Neovim client for the ai-lsp language server.
---
--- All logic lives in the server (diagnostics, fine-tuning, model swaps); this module only
--- starts it through `vim.lsp.config`/`vim.lsp.enable`, forwards user commands to
--- `workspace/executeCommand`, and turns `$/progress` into a statusline component.
local M = {}

M.name = 'ai_lsp'

--- Workspace command ids, as advertised by the server (ai_lsp_tune/server/commands.py).
M.commands = {
  finetune = 'ai-lsp.finetune',
  cancel = 'ai-lsp.finetune.cancel',
  status = 'ai-lsp.finetune.status',
  list = 'ai-lsp.model.list',
  use = 'ai-lsp.model.use',
  rollback = 'ai-lsp.model.rollback',
  export = 'ai-lsp.model.export',
  dismiss = 'ai-lsp.dismiss',
}

--- @class ai_lsp.Opts
--- @field cmd? string[] Command that starts the server over stdio.
--- @field filetypes? string[]|false Filetypes to attach to; `false` attaches to every file.
--- @field root_markers? string[] Files that mark the workspace root.
--- @field settings? table Server settings, camelCase as on the wire (model, debounceMs, ...).
--- @field enable? boolean Call `vim.lsp.enable` (default true).

--- @type ai_lsp.Opts
M.defaults = {
  cmd = { 'ai-lsp', 'serve' },
  filetypes = {
    'python', 'javascript', 'javascriptreact', 'typescript', 'typescriptreact', 'go', 'rust',
    'lua', 'c', 'cpp', 'java', 'ruby', 'php', 'sh', 'swift', 'kotlin', 'cs',
  },
  root_markers = { '.git', 'pyproject.toml', 'package.json', 'go.mod', 'Cargo.toml' },
  settings = {},
  enable = true,
}

--- @type ai_lsp.Opts
M.options = vim.deepcopy(M.defaults)

--- Progress of the current server job, keyed by token; read by `statusline()`.
--- The server's fields (`value.aiLsp`) sit beside the standard ones: phase, percent, step,
--- totalSteps, loss, valLoss, tokensPerSecond, etaSeconds, note, outcome (at the end), message.
--- @type table<string|integer, {title: string?, message: string?, percentage: integer?, fields: table?, done: boolean}>
M.progress = {}

--- The whole text of every message shown (a notice may be cut to one screen line).
--- @type string[]
M.history = {}

--- Whether `vim.notify` is Neovim's own (it echoes; a notification plugin replaces it).
local function builtin_notify()
  local info = debug.getinfo(vim.notify, 'S')
  return info ~= nil and info.source:find('vim/_editor.lua', 1, true) ~= nil
end

--- One screen line with Neovim's own `vim.notify`: a longer message leaves a "Press ENTER"
--- prompt that stops typing (and the server's progress); `:AiLspMessages` shows it whole.
--- A notification plugin (nvim-notify, fidget, snacks) gets the whole text.
--- @param msg string
--- @return string
function M.fit(msg)
  msg = (msg:gsub('%s*\n%s*', ' '))
  if not builtin_notify() then
    return msg
  end
  local width = math.max(vim.v.echospace, 40)
  if vim.fn.strdisplaywidth(msg) <= width then
    return msg
  end
  local more = '… :AiLspMessages'
  return vim.fn.strcharpart(msg, 0, width - vim.fn.strdisplaywidth(more)) .. more
end

--- Show a message with one "ai-lsp: " prefix (the server's own is dropped).
--- @param msg string
--- @param level? integer
--- @param opts? table More `vim.notify` options (`timeout = false`: a notification plugin keeps it).
function M.notify(msg, level, opts)
  msg = 'ai-lsp: ' .. msg:gsub('^ai%-lsp: ', '')
  table.insert(M.history, msg)
  if #M.history > 200 then
    table.remove(M.history, 1)
  end
  local options = vim.tbl_extend('force', { title = 'AI LSP' }, opts or {})
  vim.notify(M.fit(msg), level or vim.log.levels.INFO, options)
end

local function notify(msg, level, opts)
  M.notify(msg, level, opts)
end

local LEVELS = { vim.log.levels.ERROR, vim.log.levels.WARN, vim.log.levels.INFO, vim.log.levels.DEBUG }

--- window/showMessage: one prefix (not "LSP[ai_lsp] ai-lsp: ..."), one line.
local function show_message(_, params)
  M.notify(params.message or '', LEVELS[params.type] or vim.log.levels.INFO)
  return vim.NIL
end

--- The running ai_lsp clients (attached to the current buffer first, then any).
--- @return vim.lsp.Client|nil
function M.client()
  local attached = vim.lsp.get_clients({ name = M.name, bufnr = 0 })
  if attached[1] then
    return attached[1]
  end
  return vim.lsp.get_clients({ name = M.name })[1]
end

--- Whether the server advertised `command` (exec_cmd silently drops unadvertised ones).
--- @param client vim.lsp.Client
--- @param command string
function M.supports(client, command)
  local provider = client.server_capabilities and client.server_capabilities.executeCommandProvider
  local advertised = type(provider) == 'table' and provider.commands or {}
  return vim.list_contains(advertised, command)
end

--- Send a workspace command to the server and call `on_result(result)` with its answer.
--- Errors are shown to the user, never swallowed.
--- @param command string One of `M.commands`.
--- @param arguments? any[]
--- @param on_result? fun(result: any)
--- @return boolean sent
function M.exec(command, arguments, on_result)
  local client = M.client()
  if not client then
    notify('the language server is not running (open a file it handles, see :checkhealth ai_lsp)',
      vim.log.levels.ERROR)
    return false
  end
  if not M.supports(client, command) then
    notify(('the server does not offer `%s`: is it up to date? (see :checkhealth ai_lsp)'):format(
      command), vim.log.levels.ERROR)
    return false
  end
  client:exec_cmd({ title = command, command = command, arguments = arguments }, { bufnr = 0 },
    function(err, result)
      if err then
        notify(err.message or vim.inspect(err), vim.log.levels.ERROR)
        return
      end
      if on_result then
        on_result(result)
      end
    end)
  return true
end

--- The short line the server put in a command's answer (`message`); nil when there is none.
--- @param result any
--- @return string|nil
function M.describe(result)
  if type(result) == 'table' and type(result.message) == 'string' then
    return result.message
  end
  if type(result) == 'string' then
    return result
  end
  return nil
end

--- :AiLspFinetune [trace files...]: fine-tune on the server's own traces (plus any given).
--- @param extra_traces? string[]
function M.finetune(extra_traces)
  local arguments = nil
  if extra_traces and #extra_traces > 0 then
    local absolute = vim.tbl_map(function(p) return vim.fn.fnamemodify(p, ':p') end, extra_traces)
    arguments = { { traces = absolute } }
  end
  return M.exec(M.commands.finetune, arguments, function(result)
    notify(M.describe(result) or 'fine-tune started')
  end)
end

function M.cancel()
  return M.exec(M.commands.cancel, nil, function(result)
    notify(M.describe(result) or 'fine-tune cancelled')
  end)
end

function M.rollback()
  return M.exec(M.commands.rollback, nil, function(result)
    notify(M.describe(result) or 'rolled back to the previous model')
  end)
end

--- Export a model as a GGUF + Ollama Modelfile (the served one when `model_path` is empty).
--- @param model_path? string A model from `:AiLspModels` (a run folder)
--- @param out? string The .gguf file to write (default: under the data dir)
function M.export(model_path, out)
  local arguments = {}
  if model_path and model_path ~= '' then
    local is_local = vim.fn.isdirectory(model_path) == 1 or vim.fn.filereadable(model_path) == 1
    local path = is_local and vim.fn.fnamemodify(model_path, ':p') or model_path
    arguments.modelPath = path:gsub('/$', '')
  end
  if out and out ~= '' then
    arguments.out = vim.fn.fnamemodify(out, ':p')
  end
  local sent = M.exec(M.commands.export, next(arguments) and { arguments } or nil, function(result)
    notify(M.describe(result) or 'model exported')
  end)
  if sent ~= false then
    notify('exporting the model as GGUF + Modelfile (a small model takes about 15 s)...')
  end
  return sent
end

--- @param model_path string A model from `:AiLspModels` (a folder or the base model's name).
function M.use_model(model_path)
  local local_file = vim.fn.isdirectory(model_path) == 1 or vim.fn.filereadable(model_path) == 1
  local path = local_file and vim.fn.fnamemodify(model_path, ':p')
    or model_path
  path = path:gsub('/$', '')
  return M.exec(M.commands.use, { path }, function(result)
    notify(M.describe(result) or ('now serving ' .. model_path))
  end)
end

--- One line per model for a picker: the server's name and detail line, the served one marked.
--- @param model table A row of `ai-lsp.model.list`.
--- @return string
function M.format_model(model)
  local line = (model.serving == true and '● ' or '  ') .. (model.label or model.path)
  if type(model.detail) == 'string' and model.detail ~= '' then
    line = line .. ' · ' .. model.detail
  end
  return line
end

--- :AiLspModels: pick a model of this workspace (base and fine-tunes) to serve.
function M.models()
  return M.exec(M.commands.list, nil, function(result)
    local models = type(result) == 'table' and result.models or {}
    vim.ui.select(models, { prompt = 'AI LSP models', format_item = M.format_model },
      function(choice)
        if choice and choice.serving ~= true then
          M.exec(M.commands.use, { choice.path }, function(used)
            notify(M.describe(used) or ('now serving ' .. choice.path))
          end)
        end
      end)
  end)
end

function M.status()
  return M.exec(M.commands.status, nil, function(result)
    notify(M.describe(result) or 'no status')
  end)
end

--- Where the server's work stands, short, from its fields: "training 2/3", "evaluating".
--- @param fields table|nil the `aiLsp` fields of a `$/progress` value
--- @return string
function M.phase(fields)
  if type(fields) ~= 'table' or type(fields.phase) ~= 'string' then
    return ''
  end
  if fields.step and fields.totalSteps then
    return ('%s %d/%d'):format(fields.phase, fields.step, fields.totalSteps)
  end
  return fields.phase
end

--- Statusline component: "AI 42% training 2/3 · loss 0.84" while a job runs, its end state
--- ("AI · Fine-tune cancelled at 40%; …") for a few seconds after, else "".
--- Works beside fidget.nvim, which reads the same `$/progress` notifications.
--- @return string
function M.statusline()
  local ended -- the run that ended last (an earlier one may still be on screen)
  for _, item in pairs(M.progress) do
    if item.done then
      if not ended or item.ended_at > ended.ended_at then
        ended = item
      end
    else
      local pct = item.percentage and (item.percentage .. '%% ') or ''
      local text = item.fields and M.phase(item.fields) or (item.title or '')
      local loss = type(item.fields) == 'table' and item.fields.loss
      if text ~= '' and type(loss) == 'number' then
        text = ('%s · loss %.2f'):format(text, loss)
      end
      return ('AI %s%s'):format(pct, (text:gsub('%%', '%%%%')))
    end
  end
  if ended then
    return ('AI · %s'):format(((ended.message or ended.title or 'done'):gsub('%%', '%%%%')))
  end
  return ''
end

--- The last diagnostics our server published per buffer: `{ version, count, seq }`.
--- @type table<integer, {version: integer?, count: integer, seq: integer}>
M.published = {}

--- Per buffer, the sequence number of the last save (the server analyses it again).
--- @type table<integer, integer>
M.saved = {}
local sequence = 0

--- Statusline component for the current buffer's analysis, from what the server reports:
--- "AI starting…" until it is up, "AI analysing…" from a change (or save) it has not answered
--- yet, then "AI no issues" or "AI 2 issues" from its diagnostics; "" where it does not analyse.
--- @param bufnr? integer (default: the current buffer)
--- @return string
function M.analysis(bufnr)
  bufnr = (bufnr == nil or bufnr == 0) and vim.api.nvim_get_current_buf() or bufnr
  local client = vim.lsp.get_clients({ name = M.name, bufnr = bufnr })[1]
  if not client then
    return ''
  end
  local languages = (M.section(client.settings) or {}).languages
  if type(languages) == 'table' and #languages > 0
    and not vim.list_contains(languages, vim.bo[bufnr].filetype) then
    return ''
  end
  if not client.initialized then
    return 'AI starting…'
  end
  local last = M.published[bufnr]
  local version = vim.lsp.util.buf_versions[bufnr]
  if not last or (M.saved[bufnr] or 0) > last.seq
    or (type(last.version) == 'number' and type(version) == 'number' and last.version < version) then
    return 'AI analysing…'
  end
  if last.count == 0 then
    return 'AI no issues'
  end
  return ('AI %d issue%s'):format(last.count, last.count == 1 and '' or 's')
end

--- BufWritePost: the server analyses a saved buffer again ("analysing…" until it answers; an
--- edit needs no mark: its version is newer than the last answer's).
--- @param bufnr integer
function M._on_save(bufnr)
  if vim.lsp.get_clients({ name = M.name, bufnr = bufnr })[1] then
    sequence = sequence + 1
    M.saved[bufnr] = sequence
  end
end

--- textDocument/publishDiagnostics: recorded for `analysis()`, then shown as Neovim does.
local function publish_diagnostics(err, params, ctx)
  local bufnr = vim.uri_to_bufnr(params.uri)
  sequence = sequence + 1
  M.published[bufnr] = { version = params.version, count = #(params.diagnostics or {}), seq = sequence }
  vim.schedule(function() vim.cmd.redrawstatus() end)
  return vim.lsp.handlers['textDocument/publishDiagnostics'](err, params, ctx)
end

--- Record `$/progress` from our server for the statusline (LspProgress autocmd).
--- @param ev {data: {client_id: integer, params: {token: string|integer, value: table}}}
function M._on_progress(ev)
  local client = vim.lsp.get_client_by_id(ev.data.client_id)
  if not client or client.name ~= M.name then
    return
  end
  local token, value = ev.data.params.token, ev.data.params.value
  if type(value) ~= 'table' then
    return
  end
  local item = M.progress[token] or { done = false }
  item.title = value.title or item.title
  item.message = value.message or item.message
  item.percentage = value.percentage or item.percentage
  item.fields = value.aiLsp or item.fields
  item.done = value.kind == 'end'
  M.progress[token] = item
  if item.done then
    item.ended_at = vim.uv.hrtime()
    -- Keep the last words on screen briefly, then clear the component.
    vim.defer_fn(function()
      if M.progress[token] == item then
        M.progress[token] = nil
        vim.cmd.redrawstatus()
      end
    end, 5000)
  end
  vim.cmd.redrawstatus()
end

--- Actions the user takes later with a command, by the action's id (the command it amounts to,
--- sent beside its title): "Roll back" after a swap.
M.later = { [M.commands.rollback] = ':AiLspRollback' }

--- A decision the server waits for ("Use it anyway" after the gate kept the old model): answered
--- by :AiLspUseAnyway, never by a prompt that stops typing. Call with the action, or nil.
--- @type fun(action: table|nil)|nil
M.pending = nil

--- :AiLspUseAnyway: serve the fine-tune the gate kept out (the server's pending offer).
function M.use_anyway()
  if not M.pending then
    notify('no fine-tune is waiting for a decision (see :AiLspStatus)')
    return false
  end
  M.pending(M.pending_action)
  return true
end

--- window/showMessageRequest: announce it (User AiLspMessage); a "Roll back" offer is a
--- non-modal notice (it stays in :messages) with the command that does it; the gate's offer
--- waits, unanswered, for :AiLspUseAnyway; anything else is asked as Neovim does. The server
--- acts on the chosen action itself.
local function show_message_request(err, params, ctx)
  vim.api.nvim_exec_autocmds('User', {
    pattern = 'AiLspMessage',
    modeline = false,
    data = { message = params.message, type = params.type, actions = params.actions },
  })
  local actions = params.actions or {}
  local level = LEVELS[params.type] or vim.log.levels.INFO
  local text = (params.message:gsub('^ai%-lsp: ', ''))
  if #actions == 1 and M.later[actions[1].id] then
    -- The command first: a message cut to one line still says how to undo.
    notify(('%s undoes it · %s'):format(M.later[actions[1].id], text), level)
    return vim.NIL
  end
  local offer = vim.iter(actions):find(function(a) return a.id == M.commands.use end)
  local co, is_main = coroutine.running()
  if offer and co and not is_main then
    if M.pending then
      M.pending(nil) -- a newer offer replaces the one still waiting
    end
    M.pending_action = offer
    M.pending = function(action)
      M.pending, M.pending_action = nil, nil
      vim.schedule(function() coroutine.resume(co, action or vim.NIL) end)
    end
    notify((':AiLspUseAnyway swaps it in · %s'):format(text), level, { timeout = false })
    return coroutine.yield()
  end
  return vim.lsp.handlers['window/showMessageRequest'](err, params, ctx)
end

--- What to do when the server command is missing (said with the problem, once per session).
M.install_hint = 'install it (`uv tool install .` in a clone of ai-lsp-tune, see its README) or '
  .. "give its full path: require('ai_lsp').setup({ cmd = { '/path/to/ai-lsp', 'serve' } }); "
  .. 'then :checkhealth ai_lsp'

--- Set once the missing server has been reported (one message per session, not per file).
M.start_problem_shown = false

--- On FileType: `vim.lsp.enable` silently skips a server whose command is not executable, so
--- the first supported file that opens says so here, with the fix.
--- @param bufnr integer
function M.check_server_command(bufnr)
  if M.start_problem_shown or vim.bo[bufnr].buftype ~= '' then
    return
  end
  local enabled = vim.lsp.is_enabled and vim.lsp.is_enabled(M.name)
  if vim.lsp.is_enabled == nil then -- Neovim 0.11: only after setup() enabled it
    enabled = M.options.enable and M.did_setup
  end
  if not enabled then
    return
  end
  local config = vim.lsp.config[M.name]
  local cmd = config and config.cmd
  if type(cmd) ~= 'table' or not cmd[1] or vim.fn.executable(cmd[1]) == 1 then
    return
  end
  local filetypes = config.filetypes
  if filetypes and not vim.tbl_contains(filetypes, vim.bo[bufnr].filetype) then
    return
  end
  M.start_problem_shown = true
  notify(('the language server did not start: `%s` is not an executable command; %s'):format(
    cmd[1], M.install_hint), vim.log.levels.ERROR)
end

--- The server's settings in a `vim.lsp.config` `settings` table: `{ aiLsp = {...} }`, a bare
--- `{ model = ..., finetune = {...} }`, or both merged (the bare keys beside our section).
--- @param settings table|nil
--- @return table
function M.section(settings)
  local bare = vim.deepcopy(settings or {})
  local section = bare.aiLsp
  bare.aiLsp = nil
  return vim.tbl_deep_extend('force', bare, type(section) == 'table' and section or {})
end

--- before_init: settings given only as `vim.lsp.config('ai_lsp', { settings = ... })` go out
--- with `initialize` too. Otherwise the server starts on its defaults and the settings that
--- follow look like a change of model: the workspace's fine-tune would stop serving.
--- @param params lsp.InitializeParams
--- @param config vim.lsp.ClientConfig
local function before_init(params, config)
  local given = params.initializationOptions
  if type(given) ~= 'table' or next(given) == nil then
    local section = M.section(config.settings)
    if next(section) ~= nil then
      params.initializationOptions = section
    end
  end
end

--- The `vim.lsp.config` table for the given options (also what `lsp/ai_lsp.lua` returns).
--- @param o ai_lsp.Opts
--- @return vim.lsp.Config
function M.lsp_config(o)
  return {
    cmd = o.cmd,
    filetypes = o.filetypes or nil,
    root_markers = o.root_markers,
    init_options = o.settings,
    -- Under the server's section, so workspace/configuration requests for "aiLsp" find them.
    settings = { aiLsp = o.settings },
    before_init = before_init,
    handlers = {
      ['window/showMessageRequest'] = show_message_request,
      ['window/showMessage'] = show_message,
      ['textDocument/publishDiagnostics'] = publish_diagnostics,
    },
  }
end

--- Configure (and by default enable) the `ai_lsp` server; safe to call again.
--- @param opts? ai_lsp.Opts
function M.setup(opts)
  M.options = vim.tbl_deep_extend('force', vim.deepcopy(M.defaults), opts or {})
  vim.lsp.config(M.name, M.lsp_config(M.options))
  M.did_setup = true
  if M.options.enable then
    vim.lsp.enable(M.name)
  end
end

--- Change server settings at run time (sent as workspace/didChangeConfiguration).
--- @param settings table camelCase settings, merged into the current ones.
function M.update_settings(settings)
  M.options.settings = vim.tbl_deep_extend('force', M.options.settings or {}, settings)
  local wrapped = { aiLsp = M.options.settings }
  vim.lsp.config(M.name, { init_options = M.options.settings, settings = wrapped })
  for _, client in ipairs(vim.lsp.get_clients({ name = M.name })) do
    client.settings = wrapped
    client:notify('workspace/didChangeConfiguration', { settings = wrapped })
  end
end

return M
