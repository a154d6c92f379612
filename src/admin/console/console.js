// patgate's token console: one page, its views switched here, every change made through
// the JSON admin API with the session cookie and the session's CSRF token. No secret is
// ever put in storage, a URL or a log; a new secret lives in the DOM only while its
// dialog is open.

const $ = (id) => document.getElementById(id);

const state = {
  session: null, // {csrf, owner, admin, manage, token_id}
  config: null, // /console/config.json
  next: null, // the list's next page cursor
  editing: null, // the token being edited, or null for a new one
};

class ApiError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

async function api(method, path, body) {
  const headers = { Accept: "application/json" };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  if (method !== "GET" && method !== "HEAD" && state.session) headers["X-CSRF-Token"] = state.session.csrf;
  let res;
  try {
    res = await fetch(path, {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
      credentials: "same-origin",
      cache: "no-store",
      redirect: "error",
    });
  } catch {
    throw new ApiError(0, "the admin API could not be reached");
  }
  const text = await res.text();
  let data = null;
  if (text) {
    try {
      data = JSON.parse(text);
    } catch {
      data = null;
    }
  }
  if (res.status === 401 && state.session) {
    signedOut("Your session has ended. Sign in again.");
  }
  if (!res.ok) {
    const message = data && typeof data.error === "string" ? data.error : `the server answered ${res.status}`;
    throw new ApiError(res.status, message);
  }
  return data;
}

// ---- views -------------------------------------------------------------------------

function show(view) {
  $("loading").hidden = true;
  $("sign-in-view").hidden = view !== "sign-in";
  $("list-view").hidden = view !== "list";
  const signedIn = view === "list";
  $("who").hidden = !signedIn;
  $("sign-out").hidden = !signedIn;
}

function closeDialogs() {
  for (const d of document.querySelectorAll("dialog")) {
    if (d.open) d.close();
  }
}

function signedOut(notice) {
  state.session = null;
  state.config = null;
  closeDialogs();
  $("token-rows").replaceChildren();
  $("sign-in-notice").textContent = notice || "";
  $("sign-in-error").textContent = "";
  $("sign-in-token").value = "";
  show("sign-in");
  $("sign-in-token").focus();
}

async function signedIn(session) {
  state.session = session;
  state.config = await api("GET", "/console/config.json");
  const role = session.admin ? "admin" : session.manage ? "manage" : "read only";
  $("who").textContent = `${session.owner} (${role})`;
  $("owner-filter").hidden = !session.admin;
  // Without tokens:admin every token is the caller's own: no owner column.
  $("token-table").classList.toggle("solo", !session.admin);
  $("new-token").hidden = !session.manage;
  $("revoke-owner").hidden = !session.manage;
  show("list");
  await loadList(false);
  $("list-title").focus();
}

// ---- sign-in and out ---------------------------------------------------------------

$("sign-in-form").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  const input = $("sign-in-token");
  const token = input.value.trim();
  $("sign-in-error").textContent = "";
  if (!token) {
    $("sign-in-error").textContent = "Paste a token.";
    input.focus();
    return;
  }
  $("sign-in-submit").disabled = true;
  try {
    const session = await api("POST", "/console/session", { token });
    input.value = "";
    $("sign-in-notice").textContent = "";
    await signedIn(session);
  } catch (e) {
    input.value = "";
    $("sign-in-error").textContent =
      e.status === 401 ? "This token is not valid (unknown, expired or revoked)." : e.message;
    input.focus();
  } finally {
    $("sign-in-submit").disabled = false;
  }
});

$("sign-out").addEventListener("click", async () => {
  try {
    await api("DELETE", "/console/session");
  } catch {
    // The cookie is cleared by the answer; a session that already ended is signed out too.
  }
  signedOut("Signed out.");
});

// ---- the list ----------------------------------------------------------------------

function when(text) {
  if (!text) return "never";
  return text.replace("T", " ").replace(/:\d\d(\.\d+)?Z$/, "");
}

// Shows the day of a time, with the whole time as the cell's title.
function day(td, text) {
  if (text) {
    td.title = `${when(text)} UTC`;
    td.textContent = text.slice(0, 10);
  }
  return td;
}

function orgsText(orgs) {
  return orgs === "*" ? "all" : orgs.join(", ");
}

function cell(tr, text, cls) {
  const td = document.createElement("td");
  td.textContent = text;
  if (cls) td.className = cls;
  tr.append(td);
  return td;
}

function button(label, cls, onClick, name) {
  const b = document.createElement("button");
  b.type = "button";
  b.textContent = label;
  if (cls) b.className = cls;
  if (name) b.setAttribute("aria-label", `${label} ${name}`);
  b.addEventListener("click", onClick);
  return b;
}

function row(t) {
  const tr = document.createElement("tr");
  tr.dataset.id = t.id;
  tr.dataset.state = t.state;
  const th = document.createElement("th");
  th.scope = "row";
  th.textContent = t.name;
  tr.append(th);
  cell(tr, t.owner, "owner");
  const orgs = cell(tr, orgsText(t.orgs));
  for (const [label, v] of [
    ["repositories", t.repos],
    ["from", t.allow_from],
  ]) {
    if (Array.isArray(v)) {
      const limit = document.createElement("span");
      limit.className = "limit";
      limit.textContent = `${label}: ${v.join(", ")}`;
      orgs.append(limit);
    }
  }
  cell(tr, t.scopes.join(", "), "scopes");
  const st = cell(tr, t.state, `state state-${t.state}`);
  st.dataset.state = t.state;
  day(cell(tr, when(t.created_at), "date"), t.created_at);
  day(cell(tr, when(t.expires_at), "date"), t.expires_at);
  const used = day(cell(tr, when(t.last_used_at), "date"), t.last_used_at);
  if (t.last_used_from) {
    const from = document.createElement("span");
    from.className = "from";
    from.textContent = `from ${t.last_used_from}`;
    used.append(from);
  }
  const actions = cell(tr, "", "row-actions");
  if (state.session.manage && t.state === "active") {
    actions.append(
      button("Edit", "edit", () => openTokenDialog(t), t.name),
      button("Regenerate", "regenerate", () => regenerate(t), t.name),
      button("Rotate", "rotate", () => rotate(t), t.name),
      button("Revoke", "danger revoke", () => revoke(t), t.name),
    );
  }
  return tr;
}

async function loadList(more) {
  $("list-error").textContent = "";
  const q = new URLSearchParams();
  const st = $("filter-state").value;
  if (st) q.set("state", st);
  const owner = $("filter-owner").value.trim();
  if (state.session.admin && owner) q.set("owner", owner);
  q.set("limit", "100");
  if (more && state.next) q.set("after", state.next);
  try {
    const page = await api("GET", `/admin/v1/tokens?${q}`);
    const rows = page.tokens.map(row);
    if (more) $("token-rows").append(...rows);
    else $("token-rows").replaceChildren(...rows);
    state.next = page.next;
    $("more").hidden = !page.next;
    $("empty").hidden = $("token-rows").children.length > 0;
  } catch (e) {
    if (e.status !== 401) $("list-error").textContent = e.message;
  }
}

$("filter-form").addEventListener("submit", (ev) => {
  ev.preventDefault();
  loadList(false);
});
$("filter-state").addEventListener("change", () => loadList(false));
$("more").addEventListener("click", () => loadList(true));

// ---- dialogs: focus goes in, and back where it was -------------------------------------

function openDialog(dialog) {
  const opener = document.activeElement;
  dialog.addEventListener(
    "close",
    () => {
      if (opener && opener.isConnected && !opener.closest("[hidden]")) opener.focus();
      else $("list-title").focus();
    },
    { once: true },
  );
  dialog.showModal();
}

// ---- the secret, shown once --------------------------------------------------------

function showSecret(created) {
  const secret = created.secret;
  const host = location.hostname || "git.example.com";
  $("secret-name").textContent = `"${created.token.name}"`;
  $("secret-value").value = secret;
  $("use-password").textContent = `git clone https://${host}/ORG/REPO.git\n# Username: anything, Password: ${secret}`;
  $("use-url").textContent = `git clone https://${secret}@${host}/ORG/REPO.git`;
  $("copy-status").textContent = "";
  openDialog($("secret-dialog"));
  $("secret-value").focus();
  $("secret-value").select();
}

function forgetSecret() {
  $("secret-value").value = "";
  $("secret-value").removeAttribute("value");
  $("use-password").textContent = "";
  $("use-url").textContent = "";
  $("copy-status").textContent = "";
}

$("secret-dialog").addEventListener("close", forgetSecret);
$("secret-close").addEventListener("click", () => {
  forgetSecret();
  $("secret-dialog").close();
});
$("secret-copy").addEventListener("click", async () => {
  try {
    await navigator.clipboard.writeText($("secret-value").value);
    $("copy-status").textContent = "Copied to the clipboard.";
  } catch {
    $("secret-value").select();
    $("copy-status").textContent = "Copying was refused: press Ctrl+C (or ⌘C) to copy the selected token.";
  }
});

// ---- confirmations -----------------------------------------------------------------

let confirmAction = null;

function confirmDialog(title, text, okLabel, action, owner) {
  $("confirm-title").textContent = title;
  $("confirm-text").textContent = text;
  $("confirm-ok").textContent = okLabel;
  $("confirm-error").textContent = "";
  $("confirm-owner-field").hidden = owner === undefined;
  if (owner !== undefined) {
    $("confirm-owner").value = owner;
    $("confirm-owner").readOnly = !state.session.admin;
  }
  confirmAction = action;
  openDialog($("confirm-dialog"));
  $("confirm-cancel").focus();
}

$("confirm-cancel").addEventListener("click", () => $("confirm-dialog").close());
$("confirm-form").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  $("confirm-error").textContent = "";
  $("confirm-ok").disabled = true;
  try {
    await confirmAction();
    $("confirm-dialog").close();
  } catch (e) {
    if (e.status !== 401) $("confirm-error").textContent = e.message;
  } finally {
    $("confirm-ok").disabled = false;
  }
});

function revoke(t) {
  confirmDialog(
    "Revoke token",
    `Revoke "${t.name}" (${t.id})? Anything using it is refused at once. This cannot be undone.`,
    "Revoke",
    async () => {
      await api("POST", `/admin/v1/tokens/${encodeURIComponent(t.id)}/revoke`);
      $("list-notice").textContent = `Revoked "${t.name}".`;
      await loadList(false);
    },
  );
}

function regenerate(t) {
  confirmDialog(
    "Regenerate token",
    `Make a new secret for "${t.name}"? The current secret stops working at once.`,
    "Regenerate",
    async () => {
      const created = await api("POST", `/admin/v1/tokens/${encodeURIComponent(t.id)}/regenerate`);
      $("confirm-dialog").close();
      await loadList(false);
      showSecret(created);
    },
  );
}

function rotate(t) {
  const days = Math.round(state.config.policy.default_lifespan_seconds / DAY);
  confirmDialog(
    "Rotate token",
    `Give "${t.name}" a new secret that expires in ${days} days? The current secret stops working at once, and if it is ever presented again the token is revoked: only a thief would still hold it.`,
    "Rotate",
    async () => {
      const created = await api("POST", `/admin/v1/tokens/${encodeURIComponent(t.id)}/rotate`);
      $("confirm-dialog").close();
      await loadList(false);
      showSecret(created);
    },
  );
}

$("revoke-owner").addEventListener("click", () => {
  const owner = state.session.admin ? $("filter-owner").value.trim() || state.session.owner : state.session.owner;
  confirmDialog(
    "Revoke all tokens of an owner",
    "Every active token of this owner is revoked at once. This cannot be undone.",
    "Revoke all",
    async () => {
      const who = $("confirm-owner").value.trim();
      if (!who) throw new ApiError(400, "owner: name an owner");
      const r = await api("POST", `/admin/v1/owners/${encodeURIComponent(who)}/revoke`);
      $("list-notice").textContent = `Revoked ${r.revoked} token${r.revoked === 1 ? "" : "s"} of ${who}.`;
      await loadList(false);
    },
    owner,
  );
});

// ---- the token form: new and edit --------------------------------------------------

const DAY = 86400;
const FIELD_ERRORS = ["name", "owner", "orgs", "repos", "allow_from", "expires", "scopes", "form"];

function clearErrors() {
  for (const f of FIELD_ERRORS) $(`err-${f}`).textContent = "";
  for (const el of $("token-form").querySelectorAll("[aria-invalid]")) el.removeAttribute("aria-invalid");
}

// The field an API error is about, from the key its message starts with.
function fieldOf(message) {
  const m = /^([A-Za-z_.]+)(\[\d+\])?:/.exec(message);
  const key = m ? m[1] : "";
  if (key === "name") return ["name", "tf-name"];
  if (key === "owner") return ["owner", "tf-owner"];
  if (["orgs", "organizations", "policy.allow_all_orgs"].includes(key)) return ["orgs", "tf-orgs"];
  if (key === "repos") return ["repos", "tf-repos"];
  if (key === "allow_from") return ["allow_from", "tf-allow-from"];
  if (["expires_at", "expires_in", "policy.max_lifespan"].includes(key)) return ["expires", "tf-expiry"];
  if (["scopes", "policy.grantable_scopes", "policy.allow_full"].includes(key)) return ["scopes", "tf-custom"];
  return ["form", null];
}

function showError(message) {
  const [field, input] = fieldOf(message);
  $(`err-${field}`).textContent = message;
  if (input) {
    $(input).setAttribute("aria-invalid", "true");
    $(input).focus();
  }
}

function levelName(scope) {
  const level = scope.name.split(":")[1] || scope.name;
  return level.charAt(0).toUpperCase() + level.slice(1);
}

// Whether each scope of an area implies all the ones before it: then one choice of level.
function isChain(scopes) {
  return scopes.every((s, i) => scopes.slice(0, i).every((p) => s.implies.includes(p.name)));
}

function buildScopes() {
  const box = $("tf-scopes");
  box.replaceChildren();
  for (const area of state.config.areas) {
    const fs = document.createElement("fieldset");
    fs.className = "area";
    const legend = document.createElement("legend");
    legend.textContent = area.area;
    fs.append(legend);
    const chain = isChain(area.scopes);
    const group = `scope-${area.area.replace(/\W+/g, "-").toLowerCase()}`;
    const choice = (value, label, summary, disabled, type) => {
      const l = document.createElement("label");
      l.className = "choice";
      const input = document.createElement("input");
      input.type = type;
      input.name = group;
      input.value = value;
      input.disabled = disabled;
      input.dataset.scope = value;
      l.append(input, ` ${label}`);
      if (summary) {
        const s = document.createElement("span");
        s.className = "summary";
        s.textContent = ` — ${summary}`;
        l.append(s);
      }
      fs.append(l);
      return input;
    };
    if (chain) {
      choice("", "None", "", false, "radio").checked = true;
    }
    for (const s of area.scopes) {
      const note = s.grantable ? s.summary : `${s.summary} (you cannot grant it)`;
      const input = choice(s.name, levelName(s), note, !s.grantable, chain ? "radio" : "checkbox");
      input.setAttribute("aria-label", `${area.area}: ${levelName(s)} (${s.name})`);
      if (!chain) {
        input.addEventListener("change", () => impliedChecks(fs));
      }
    }
    box.append(fs);
  }
}

// In an area of independent scopes, a chosen scope checks what it implies.
function impliedChecks(fs) {
  const all = scopeIndex();
  const boxes = [...fs.querySelectorAll("input[type=checkbox]")];
  const implied = new Set();
  for (const b of boxes) if (b.checked && !b.disabled) for (const i of all.get(b.value).implies) implied.add(i);
  for (const b of boxes) {
    if (implied.has(b.value)) b.checked = true;
  }
}

function scopeIndex() {
  const m = new Map();
  for (const a of state.config.areas) for (const s of a.scopes) m.set(s.name, s);
  return m;
}

// Every scope a list of names grants, implications applied.
function closure(names) {
  const all = scopeIndex();
  const out = new Set();
  for (const n of names) {
    if (n === "full") return new Set(all.keys());
    const s = all.get(n);
    if (!s) continue;
    out.add(n);
    for (const i of s.implies) out.add(i);
  }
  return out;
}

function chosenScopes() {
  if ($("tf-full").checked) return ["full"];
  const names = [];
  for (const input of $("tf-scopes").querySelectorAll("input:checked")) {
    if (input.value) names.push(input.value);
  }
  return names;
}

function setScopes(names) {
  const granted = closure(names);
  for (const fs of $("tf-scopes").querySelectorAll("fieldset")) {
    const inputs = [...fs.querySelectorAll("input")];
    if (inputs[0] && inputs[0].type === "radio") {
      let pick = inputs[0];
      for (const i of inputs) if (i.value && granted.has(i.value)) pick = i;
      pick.checked = true;
    } else {
      for (const i of inputs) i.checked = granted.has(i.value);
    }
  }
}

function syncScopeMode() {
  const full = $("tf-full").checked;
  $("tf-scopes").hidden = full;
  for (const i of $("tf-scopes").querySelectorAll("input")) {
    if (full) i.setAttribute("tabindex", "-1");
    else i.removeAttribute("tabindex");
  }
}

function syncOrgsMode() {
  $("tf-orgs").disabled = $("tf-orgs-all").checked;
}

function syncExpiry() {
  $("tf-date-field").hidden = $("tf-expiry").value !== "custom";
}

$("tf-full").addEventListener("change", syncScopeMode);
$("tf-custom").addEventListener("change", syncScopeMode);
$("tf-orgs-all").addEventListener("change", syncOrgsMode);
$("tf-orgs-some").addEventListener("change", syncOrgsMode);
$("tf-expiry").addEventListener("change", syncExpiry);

function isoDate(seconds) {
  return new Date(seconds * 1000).toISOString().slice(0, 10);
}

function openTokenDialog(token) {
  const p = state.config.policy;
  state.editing = token || null;
  const editing = !!token;
  clearErrors();
  buildScopes();
  $("token-dialog-title").textContent = editing ? `Edit "${token.name}"` : "New token";
  $("tf-submit").textContent = editing ? "Save" : "Create";
  $("tf-owner-field").hidden = editing || !state.session.admin;
  $("tf-owner").value = "";
  $("tf-name").value = editing ? token.name : "";
  // Organizations: all only where the policy allows (or the token has it already).
  const all = editing && token.orgs === "*";
  $("tf-orgs-all-label").hidden = !state.config.may_grant_all_orgs && !all;
  $("tf-orgs-all").checked = all;
  $("tf-orgs-some").checked = !all;
  $("tf-orgs").value = editing && !all ? token.orgs.join(", ") : "";
  syncOrgsMode();
  $("tf-repos").value = editing ? listText(token.repos) : "";
  $("tf-allow-from").value = editing ? listText(token.allow_from) : "";
  // Expiration: the choices the policy's max_lifespan allows, or a date up to it.
  const maxDays = Math.floor(p.max_lifespan_seconds / DAY);
  $("tf-expiry-keep").hidden = !editing;
  $("tf-expiry-keep").disabled = !editing;
  let first = null;
  for (const o of $("tf-expiry").options) {
    const m = /^(\d+)d$/.exec(o.value);
    if (m) {
      o.disabled = Number(m[1]) > maxDays;
      if (!o.disabled && !first) first = o.value;
    }
  }
  $("tf-expiry").value = editing ? "keep" : first || "custom";
  const created = editing ? Date.parse(token.created_at) / 1000 : Date.now() / 1000;
  $("tf-date").min = isoDate(Date.now() / 1000 + DAY);
  $("tf-date").max = isoDate(created + p.max_lifespan_seconds);
  $("tf-date").value = "";
  $("tf-expiry-hint").textContent = `Tokens may live at most ${maxDays} days${editing ? " from their creation" : ""} (policy.max_lifespan).`;
  syncExpiry();
  // Scopes: full access only where the policy allows it.
  $("tf-full-label").hidden = !state.config.may_grant_full && !(editing && token.scopes.includes("full"));
  const full = editing && token.scopes.includes("full");
  $("tf-full").checked = full;
  $("tf-custom").checked = !full;
  setScopes(editing ? token.scopes : []);
  syncScopeMode();
  openDialog($("token-dialog"));
  $("tf-name").focus();
}

$("new-token").addEventListener("click", () => openTokenDialog(null));
$("tf-cancel").addEventListener("click", () => $("token-dialog").close());

// A "*"-or-list field of a token as the form shows it: empty for "*" (or when absent).
function listText(v) {
  return Array.isArray(v) ? v.join(", ") : "";
}

// The form's text of such a field as JSON: "*" when empty.
function listValue(id) {
  const items = $(id)
    .value.split(",")
    .map((s) => s.trim())
    .filter((s) => s);
  return items.length ? items : "*";
}

function orgsValue() {
  if ($("tf-orgs-all").checked) return "*";
  return $("tf-orgs")
    .value.split(",")
    .map((s) => s.trim())
    .filter((s) => s);
}

function expiryFields() {
  const v = $("tf-expiry").value;
  if (v === "keep") return {};
  if (v === "custom") {
    const d = $("tf-date").value;
    if (!d) throw new ApiError(400, "expires_at: choose a date");
    return { expires_at: `${d}T23:59:59Z` };
  }
  return { expires_in: v };
}

$("token-form").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  clearErrors();
  const editing = state.editing;
  const name = $("tf-name").value.trim();
  const orgs = orgsValue();
  const scopes = chosenScopes();
  try {
    if (!name) throw new ApiError(400, "name: give the token a name");
    if (orgs !== "*" && orgs.length === 0) throw new ApiError(400, "orgs: name at least one organization, or choose all");
    if (scopes.length === 0) throw new ApiError(400, "scopes: choose at least one scope");
    const body = { name, orgs, scopes, ...expiryFields() };
    // Limits are sent when set, or on an edit when changed (so an unchanged one is left alone).
    for (const [key, id] of [
      ["repos", "tf-repos"],
      ["allow_from", "tf-allow-from"],
    ]) {
      const value = listValue(id);
      const before = editing ? listText(editing[key]) : "";
      if (editing ? listText(value) !== before : value !== "*") body[key] = value;
    }
    $("tf-submit").disabled = true;
    if (editing) {
      await api("PATCH", `/admin/v1/tokens/${encodeURIComponent(editing.id)}`, body);
      $("token-dialog").close();
      $("list-notice").textContent = `Saved "${name}".`;
      await loadList(false);
    } else {
      const owner = $("tf-owner").value.trim();
      if (state.session.admin && owner) body.owner = owner;
      const created = await api("POST", "/admin/v1/tokens", body);
      $("token-dialog").close();
      $("list-notice").textContent = `Created "${name}".`;
      await loadList(false);
      showSecret(created);
    }
  } catch (e) {
    if (e.status !== 401) showError(e.message);
  } finally {
    $("tf-submit").disabled = false;
  }
});

// ---- start -------------------------------------------------------------------------

async function start() {
  try {
    const session = await fetch("/console/session", { credentials: "same-origin", cache: "no-store" });
    if (session.ok) {
      await signedIn(await session.json());
      return;
    }
  } catch {
    // Shown as signed out.
  }
  signedOut("");
}

start();
