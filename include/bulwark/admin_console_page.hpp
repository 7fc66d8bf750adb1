// The admin console's page: its HTML, script and style, served by AdminHandler at /, /console.js
// and /console.css.
// SPDX-License-Identifier: MIT
#ifndef BULWARK_ADMIN_CONSOLE_PAGE_HPP
#define BULWARK_ADMIN_CONSOLE_PAGE_HPP

#include <string_view>

namespace bulwark {

// The console is plain HTML, JavaScript and CSS with no framework and no external resource, so
// that it runs under the handler's Content-Security-Policy (default-src 'self'): no inline
// script or style, no eval. The script builds every node with textContent, so a value from the
// API (a dead letter's error text, say) is shown as text and never parsed as markup. It keeps
// the operator's token in sessionStorage and sends it as "Authorization: Bearer <token>"; it
// calls the API by relative URLs ("api/..."), so mount the handler under a path that ends in a
// slash. Each literal stays under the 64 KiB that compilers must accept.
//   res.set_content(std::string(bulwark::admin_console_html()), "text/html; charset=utf-8");
// The functions return views of string literals: thread-safe, valid for the program's life.

// The page (served at GET /).
inline std::string_view admin_console_html() noexcept {
    return R"page(<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>bulwark console</title>
<link rel="stylesheet" href="console.css">
<script src="console.js" defer></script>
</head>
<body>
<header id="top">
  <h1>bulwark console</h1>
  <span id="readiness" class="badge">readiness unknown</span>
  <form id="token-form" autocomplete="off">
    <label for="token">Operator token</label>
    <input id="token" type="password" spellcheck="false" placeholder="paste your token">
    <button id="save-token" type="submit">Use token</button>
    <button id="forget-token" type="button">Forget</button>
  </form>
  <label class="inline"><input id="auto-refresh" type="checkbox" checked> auto-refresh</label>
  <button id="refresh" type="button">Refresh</button>
</header>
<p id="status" class="status" role="status" aria-live="polite">Enter an operator token to load the console.</p>
<main>
  <div class="panels">
    <section id="summary-panel" class="panel">
      <h2>Engine and retry queue</h2>
      <dl id="engine-summary" class="facts"></dl>
      <table id="engine-channels" class="grid">
        <thead><tr><th>channel</th><th>attempts</th><th>sent</th><th>success</th><th>p95</th><th>fallbacks</th></tr></thead>
        <tbody></tbody>
      </table>
      <h3>Retry queue</h3>
      <dl id="retry-summary" class="facts"></dl>
    </section>
    <section id="breakers-panel" class="panel">
      <h2>Circuit breakers</h2>
      <table id="breakers" class="grid">
        <thead><tr><th>name</th><th>state</th><th>failure rate</th><th>calls</th><th>failures</th><th>slow</th><th>rejected</th><th></th></tr></thead>
        <tbody></tbody>
      </table>
      <p class="row">
        <label for="breaker-reason">Trip reason</label>
        <input id="breaker-reason" type="text" maxlength="200" placeholder="optional">
      </p>
    </section>
    <section id="degradation-panel" class="panel">
      <h2>Degradation</h2>
      <dl class="facts">
        <div class="fact"><dt>level</dt><dd><span id="degradation-level">?</span></dd></div>
        <div class="fact"><dt>override</dt><dd id="degradation-overridden"></dd></div>
        <div class="fact"><dt>reason</dt><dd id="degradation-reason"></dd></div>
      </dl>
      <form id="degradation-form" class="row">
        <select id="degradation-select" aria-label="level"></select>
        <input id="degradation-reason-input" type="text" maxlength="200" placeholder="reason (required)">
        <button id="degradation-set" type="submit">Set level</button>
        <button id="degradation-clear" type="button">Clear override</button>
      </form>
    </section>
    <section id="fixers-panel" class="panel">
      <h2>Fixer effectiveness</h2>
      <table id="fixers" class="grid">
        <thead><tr><th>fixer</th><th>executions</th><th>success</th><th>failure</th><th>mean duration</th><th>alert</th></tr></thead>
        <tbody></tbody>
      </table>
    </section>
  </div>
  <section id="letters-panel" class="panel wide">
    <h2>Dead letters <span id="letters-total" class="muted"></span></h2>
    <form id="filters" class="row">
      <label>status
        <select id="filter-status">
          <option value="">any</option>
          <option value="pending">pending</option>
          <option value="reprocessed">reprocessed</option>
          <option value="dismissed">dismissed</option>
        </select>
      </label>
      <label>type <input id="filter-type" type="text" size="8"></label>
      <label>category <input id="filter-category" type="text" size="10"></label>
      <label>error class <input id="filter-error-class" type="text" size="14"></label>
      <label>text <input id="filter-text" type="text" size="16" placeholder="in the error"></label>
      <button id="apply-filters" type="submit">Apply filters</button>
      <button id="clear-filters" type="button">Clear</button>
    </form>
    <div id="bulk" class="bulk">
      <p class="row"><strong id="selected-count">0 selected</strong>
        <button id="clear-selection" type="button">Clear selection</button></p>
      <div class="row">
        <input id="dismiss-reason" type="text" maxlength="200" placeholder="dismiss reason (required)">
        <button id="bulk-dismiss" type="button">Dismiss</button>
      </div>
      <div class="row">
        <input id="categorize-category" type="text" maxlength="100" placeholder="category">
        <select id="categorize-severity" aria-label="severity">
          <option value="">no severity</option>
          <option value="low">low</option>
          <option value="medium">medium</option>
          <option value="high">high</option>
          <option value="critical">critical</option>
        </select>
        <input id="categorize-tags" type="text" maxlength="200" placeholder="tags, comma separated">
        <button id="bulk-categorize" type="button">Categorize</button>
      </div>
      <div class="row">
        <button id="bulk-fix" type="button">Fix</button>
        <input id="reprocess-channels" type="text" maxlength="200" placeholder="channels (optional)">
        <button id="bulk-reprocess" type="button">Reprocess</button>
      </div>
      <p class="row"><progress id="bulk-progress-bar" max="1" value="0"></progress>
        <span id="bulk-progress">0/0</span></p>
      <p id="bulk-result" class="result"></p>
    </div>
    <table id="letters" class="grid letters">
      <thead><tr>
        <th><input id="select-page" type="checkbox" aria-label="select all on page"></th>
        <th>id</th><th>type</th><th>status</th><th>reason</th><th>category</th><th>error class</th>
        <th>severity</th><th>error</th><th>created</th><th>redrives</th>
      </tr></thead>
      <tbody></tbody>
    </table>
    <p class="row pager">
      <button id="prev-page" type="button">Previous</button>
      <span id="page-info"></span>
      <button id="next-page" type="button">Next</button>
      <label>per page
        <select id="page-size">
          <option value="10">10</option>
          <option value="25">25</option>
          <option value="50" selected>50</option>
          <option value="100">100</option>
        </select>
      </label>
    </p>
    <div id="letter-detail" class="detail" hidden>
      <h3>Dead letter <span id="detail-id"></span> <button id="detail-close" type="button">Close</button></h3>
      <dl id="detail-fields" class="facts"></dl>
      <h4>Payload</h4>
      <pre id="detail-payload"></pre>
      <h4>Attempts</h4>
      <table id="detail-attempts" class="grid">
        <thead><tr><th>at</th><th>channel</th><th>error</th></tr></thead>
        <tbody></tbody>
      </table>
    </div>
  </section>
  <section id="audit-panel" class="panel wide">
    <h2>Audit log</h2>
    <table id="audit" class="grid">
      <thead><tr><th>at</th><th>operator</th><th>action</th><th>target</th><th>count</th><th>detail</th></tr></thead>
      <tbody></tbody>
    </table>
  </section>
</main>
</body>
</html>
)page";
}

// Its script (served at GET /console.js).
inline std::string_view admin_console_js() noexcept {
    return R"page(// bulwark console: talks to the admin JSON API next to this script. Every value from the server
// enters the page through textContent (never innerHTML), so it is shown as text, not markup.
'use strict';
(function () {
  var TOKEN_KEY = 'bulwark.console.token';
  var CHUNK = 100;          // ids per bulk request
  var MAX_RETRY_WAIT = 10;  // seconds waited on a 429 before the same chunk is sent again
  var REFRESH_MS = 10000;

  var state = {
    offset: 0,
    total: 0,
    filters: {},
    selected: new Set(),
    pageIds: [],
    busy: false,
    lettersSeq: 0,
    timer: null
  };

  function $(id) { return document.getElementById(id); }

  // A new element: attrs are properties or attributes, children strings (text) or nodes.
  function el(tag, attrs, children) {
    var node = document.createElement(tag);
    if (attrs) {
      Object.keys(attrs).forEach(function (k) {
        var v = attrs[k];
        if (k === 'class') node.className = v;
        else if (k === 'text') node.textContent = v;
        else if (k.indexOf('data-') === 0) node.setAttribute(k, v);
        else node[k] = v;
      });
    }
    (children || []).forEach(function (c) {
      node.appendChild(typeof c === 'string' ? document.createTextNode(c) : c);
    });
    return node;
  }

  function clear(node) {
    while (node.firstChild) node.removeChild(node.firstChild);
  }

  function text(v) {
    if (v === null || v === undefined) return '';
    if (Array.isArray(v)) return v.join(', ');
    return String(v);
  }

  function percent(v) {
    return typeof v === 'number' ? (v * 100).toFixed(1) + '%' : text(v);
  }

  function seconds(v) {
    if (typeof v !== 'number') return text(v);
    return v < 1 ? (v * 1000).toFixed(1) + ' ms' : v.toFixed(2) + ' s';
  }

  function setStatus(message, kind) {
    var s = $('status');
    s.textContent = message;
    s.className = 'status' + (kind ? ' ' + kind : '');
  }

  function token() { return sessionStorage.getItem(TOKEN_KEY) || ''; }

  function ApiError(status, message, retryAfter) {
    this.status = status;
    this.message = message;
    this.retryAfter = retryAfter;
  }
  ApiError.prototype.toString = function () {
    return (this.status ? this.status + ' ' : '') + this.message;
  };

  // Calls the API: resolves with the parsed JSON, rejects with an ApiError.
  function api(method, path, body) {
    var headers = { 'Accept': 'application/json' };
    var t = token();
    if (t) headers['Authorization'] = 'Bearer ' + t;
    var init = { method: method, headers: headers, credentials: 'omit', cache: 'no-store' };
    if (body !== undefined) {
      headers['Content-Type'] = 'application/json';
      init.body = JSON.stringify(body);
    }
    return fetch(path, init).then(function (res) {
      return res.text().then(function (raw) {
        var data = null;
        try { data = raw ? JSON.parse(raw) : null; } catch (e) { data = null; }
        if (!res.ok) {
          var msg = data && data.error ? data.error : (res.statusText || 'request failed');
          var wait = parseInt(res.headers.get('Retry-After') || '', 10);
          throw new ApiError(res.status, msg, isNaN(wait) ? null : wait);
        }
        return data;
      });
    }, function (e) {
      throw new ApiError(0, 'network error: ' + e.message, null);
    });
  }

  function notConfigured(e) {
    return e instanceof ApiError && e.status === 404 && /not configured/.test(e.message);
  }

  // A panel's table body filled with one row per item; cells() gives each row's cells.
  function fillTable(table, items, cells, empty) {
    var body = table.tBodies[0];
    clear(body);
    if (!items.length) {
      var cols = table.tHead.rows[0].cells.length;
      body.appendChild(el('tr', { class: 'empty' }, [el('td', { colSpan: cols, text: empty })]));
      return;
    }
    items.forEach(function (item) {
      var row = el('tr');
      cells(item).forEach(function (c) {
        row.appendChild(c instanceof Node ? el('td', null, [c]) : el('td', { text: text(c) }));
      });
      body.appendChild(row);
    });
  }

  function facts(dl, pairs) {
    clear(dl);
    pairs.forEach(function (p) {
      dl.appendChild(el('div', { class: 'fact' }, [el('dt', { text: p[0] }),
                                                   el('dd', { text: text(p[1]) })]));
    });
  }

  // ---- panels -------------------------------------------------------------------------------

  function loadReadiness() {
    return fetch('api/health/ready', { cache: 'no-store' }).then(function (res) {
      return res.json().then(function (data) {
        var b = $('readiness');
        var ready = data && data.status === 'ready';
        b.textContent = ready ? 'ready' : (data && data.status ? text(data.status) : 'unknown');
        b.className = 'badge ' + (ready ? 'good' : 'bad');
      });
    }).catch(function () {
      $('readiness').textContent = 'readiness unknown';
      $('readiness').className = 'badge';
    });
  }

  function loadEngine() {
    return api('GET', 'api/engine').then(function (data) {
      var stats = (data && data.stats) || {};
      var overall = stats.overall || {};
      var counters = (data && data.counters) || {};
      var byStatus = stats.by_status || {};
      var pairs = [['in the queue', stats.queued], ['being sent', stats.in_flight],
                   ['attempts (window)', overall.attempts],
                   ['success rate (window)', percent(overall.success_rate)]];
      Object.keys(byStatus).forEach(function (k) {
        if (byStatus[k]) pairs.push(['tracked ' + k.replace(/_/g, ' '), byStatus[k]]);
      });
      Object.keys(counters).forEach(function (k) {
        if (typeof counters[k] === 'number' && (counters[k] || k === 'submitted')) {
          pairs.push([k.replace(/_/g, ' ') + ' (total)', counters[k]]);
        }
      });
      facts($('engine-summary'), pairs);
      fillTable($('engine-channels'), stats.channels || [], function (c) {
        return [c.channel, c.attempts, c.successes, percent(c.success_rate),
                seconds(c.p95_response_s), c.fallbacks];
      }, 'no channels');
    }, function (e) {
      if (!notConfigured(e)) throw e;
      facts($('engine-summary'), [['engine', 'not configured']]);
      fillTable($('engine-channels'), [], null, 'no engine');
    });
  }

  function loadRetryQueue() {
    return api('GET', 'api/retry-queue').then(function (data) {
      // The main figures always, the rarer counters only once they count something.
      var main = ['queued', 'in_flight', 'enqueued', 'delivered', 'retries', 'dead_lettered'];
      var pairs = [];
      Object.keys(data || {}).forEach(function (k) {
        var v = data[k];
        if ((typeof v === 'number' && (v || main.indexOf(k) >= 0)) || typeof v === 'string') {
          pairs.push([k.replace(/_/g, ' '), v]);
        }
      });
      facts($('retry-summary'), pairs);
    }, function (e) {
      if (!notConfigured(e)) throw e;
      facts($('retry-summary'), [['retry queue', 'not configured']]);
    });
  }

  function breakerButton(label, cls, name) {
    return el('button', { type: 'button', class: cls, text: label, 'data-name': name });
  }

  function loadBreakers() {
    return api('GET', 'api/breakers').then(function (data) {
      fillTable($('breakers'), (data && data.breakers) || [], function (b) {
        var actions = el('span', { class: 'actions' }, [
          breakerButton('Trip', 'trip', b.name), ' ', breakerButton('Reset', 'reset', b.name)]);
        return [el('span', { class: 'breaker-name', text: text(b.name) }),
                el('span', { class: 'state state-' + text(b.state).replace(/[^a-z_]/g, ''),
                             text: text(b.state) }),
                percent(b.failure_rate), b.calls, b.failures, b.slow_calls, b.rejected, actions];
      }, 'no breakers');
    }, function (e) {
      if (!notConfigured(e)) throw e;
      fillTable($('breakers'), [], null, 'breakers not configured');
    });
  }

  function breakerAction(action, name) {
    var body = {};
    var reason = $('breaker-reason').value.trim();
    if (action === 'trip' && reason) body.reason = reason;
    return api('POST', 'api/breakers/' + encodeURIComponent(name) + '/' + action, body)
      .then(function (r) {
        setStatus('breaker ' + text(r && r.name ? r.name : name) + ' is now ' +
                  text(r && r.state), 'ok');
        return Promise.all([loadBreakers(), loadAudit()]);
      }).catch(showError);
  }

  function showDegradation(d) {
    $('degradation-level').textContent = text(d.level);
    $('degradation-level').className = 'level level-' + text(d.level).replace(/[^a-z_]/g, '');
    $('degradation-reason').textContent = text(d.reason);
    $('degradation-overridden').textContent = d.overridden ? 'set by an operator' : 'automatic';
    var select = $('degradation-select');
    var levels = Array.isArray(d.levels) ? d.levels : [];
    var current = select.value || text(d.level);
    if (select.options.length !== levels.length) {
      clear(select);
      levels.forEach(function (l) { select.appendChild(el('option', { value: l, text: l })); });
    }
    select.value = current;
  }

  function loadDegradation() {
    return api('GET', 'api/degradation').then(showDegradation, function (e) {
      if (!notConfigured(e)) throw e;
      $('degradation-level').textContent = 'not configured';
    });
  }

  function loadFixers() {
    return api('GET', 'api/fixers').then(function (data) {
      fillTable($('fixers'), (data && data.fixers) || [], function (f) {
        return [f.fixer, f.executions, percent(f.success_rate), percent(f.failure_rate),
                typeof f.mean_duration_ms === 'number' ? f.mean_duration_ms.toFixed(1) + ' ms'
                                                       : text(f.mean_duration_ms),
                el('span', { class: 'alert alert-' + text(f.alert).replace(/[^a-z]/g, ''),
                             text: text(f.alert) })];
      }, 'no fixer has run yet');
    }, function (e) {
      if (!notConfigured(e)) throw e;
      fillTable($('fixers'), [], null, 'fixes not configured');
    });
  }

  function loadAudit() {
    return api('GET', 'api/audit?limit=20').then(function (data) {
      fillTable($('audit'), (data && data.entries) || [], function (a) {
        return [a.at, a.operator, a.action, a.target, a.count, a.detail];
      }, 'no operator action yet');
    });
  }

  // ---- dead letters ---------------------------------------------------------------------------

  function readFilters() {
    var f = {};
    var pairs = [['status', 'filter-status'], ['type', 'filter-type'],
                 ['category', 'filter-category'], ['error_class', 'filter-error-class'],
                 ['text', 'filter-text']];
    pairs.forEach(function (p) {
      var v = $(p[1]).value.trim();
      if (v) f[p[0]] = v;
    });
    return f;
  }

  function pageSize() { return parseInt($('page-size').value, 10) || 50; }

  function lettersQuery() {
    var q = new URLSearchParams();
    Object.keys(state.filters).forEach(function (k) { q.set(k, state.filters[k]); });
    q.set('offset', String(state.offset));
    q.set('limit', String(pageSize()));
    return q.toString();
  }

  function updateSelection() {
    var n = state.selected.size;
    $('selected-count').textContent = n + ' selected';
    var boxes = document.querySelectorAll('#letters .select-letter');
    var all = boxes.length > 0;
    boxes.forEach(function (b) {
      b.checked = state.selected.has(b.value);
      if (!b.checked) all = false;
    });
    $('select-page').checked = all;
    ['bulk-dismiss', 'bulk-categorize', 'bulk-fix', 'bulk-reprocess'].forEach(function (id) {
      $(id).disabled = state.busy || n === 0;
    });
  }

  function letterRow(d) {
    var box = el('input', { type: 'checkbox', class: 'select-letter', value: text(d.id) });
    box.setAttribute('aria-label', 'select ' + text(d.id));
    var idButton = el('button', { type: 'button', class: 'link show-letter', text: text(d.id),
                                  'data-id': text(d.id) });
    var severity = text(d.severity);
    var row = el('tr', { class: 'letter status-' + text(d.status).replace(/[^a-z]/g, ''),
                         'data-id': text(d.id) }, [
      el('td', null, [box]),
      el('td', { class: 'letter-id' }, [idButton]),
      el('td', { class: 'letter-type', text: text(d.type) }),
      el('td', { class: 'letter-status', text: text(d.status) }),
      el('td', { class: 'letter-reason', text: text(d.reason) }),
      el('td', { class: 'letter-category', text: text(d.category) }),
      el('td', { class: 'letter-error-class', text: text(d.error_class) }),
      el('td', { class: 'letter-severity' + (severity ? ' sev-' + severity.replace(/[^a-z]/g, '') : ''),
                 text: severity }),
      el('td', { class: 'letter-error', text: text(d.error) }),
      el('td', { class: 'letter-created', text: text(d.created) }),
      el('td', { class: 'letter-redrives', text: text(d.redrives) })
    ]);
    return row;
  }

  function loadLetters() {
    var seq = ++state.lettersSeq;  // only the latest request may render (filters change fast)
    return api('GET', 'api/dead-letters?' + lettersQuery()).then(function (data) {
      if (seq !== state.lettersSeq) return;
      var items = (data && data.items) || [];
      state.total = (data && typeof data.total === 'number') ? data.total : items.length;
      if (items.length === 0 && state.offset > 0 && state.total > 0) {
        state.offset = Math.max(0, state.total - pageSize());
        return loadLetters();
      }
      var body = $('letters').tBodies[0];
      clear(body);
      state.pageIds = items.map(function (d) { return text(d.id); });
      if (!items.length) {
        body.appendChild(el('tr', { class: 'empty' },
                            [el('td', { colSpan: 11, text: 'no dead letter matches' })]));
      }
      items.forEach(function (d) { body.appendChild(letterRow(d)); });
      var first = items.length ? state.offset + 1 : 0;
      $('page-info').textContent = first + '-' + (state.offset + items.length) + ' of ' +
                                   state.total;
      $('letters-total').textContent = '(' + state.total + ' matching)';
      $('prev-page').disabled = state.offset === 0;
      $('next-page').disabled = state.offset + items.length >= state.total;
      $('letters').setAttribute('data-loaded', String(seq));  // for tests: a new value per load
      updateSelection();
    }, function (e) {
      if (notConfigured(e)) {
        $('page-info').textContent = 'dead letters not configured';
        return;
      }
      throw e;
    });
  }

  function showLetter(id) {
    return api('GET', 'api/dead-letters/' + encodeURIComponent(id)).then(function (d) {
      $('detail-id').textContent = text(d.id);
      var pairs = [];
      ['type', 'status', 'reason', 'category', 'tags', 'error_class', 'severity', 'error',
       'created', 'last_attempt', 'redrives', 'note'].forEach(function (k) {
        if (d[k] !== undefined) pairs.push([k.replace(/_/g, ' '), d[k]]);
      });
      facts($('detail-fields'), pairs);
      $('detail-payload').textContent = text(d.payload);
      fillTable($('detail-attempts'), d.attempts || [], function (a) {
        return [a.at, a.channel, a.error];
      }, 'no attempts recorded');
      $('letter-detail').hidden = false;
    }).catch(showError);
  }

  // ---- bulk operations ------------------------------------------------------------------------

  function wait(seconds) {
    return new Promise(function (resolve) { setTimeout(resolve, seconds * 1000); });
  }

  function sendChunk(operation, body, attempt) {
    return api('POST', 'api/dead-letters/' + operation, body).catch(function (e) {
      if (e instanceof ApiError && e.status === 429 && attempt < 5) {
        var secs = Math.min(Math.max(e.retryAfter || 1, 1), MAX_RETRY_WAIT);
        $('bulk-progress').textContent += ' (rate limited, waiting ' + secs + ' s)';
        return wait(secs).then(function () { return sendChunk(operation, body, attempt + 1); });
      }
      throw e;
    });
  }

  function summary(operation, sum) {
    var parts = [operation + ': requested ' + sum.requested, 'changed ' + sum.changed,
                 'unchanged ' + sum.unchanged.length, 'not found ' + sum.not_found.length];
    if (sum.failed.length) {
      // The first failure's reason tells the operator why; the rest are counted.
      parts.push('failed ' + sum.failed.length + ' (' + text(sum.failed[0].id) + ': ' +
                 text(sum.failed[0].error) + ')');
    }
    if (sum.redriven !== null) parts.push('redriven ' + sum.redriven);
    var outcomes = Object.keys(sum.outcomes);
    if (outcomes.length) {
      parts.push('outcomes ' + outcomes.map(function (k) {
        return k + ' ' + sum.outcomes[k];
      }).join(', '));
    }
    return parts.join(', ');
  }

  // Sends the selection in chunks of CHUNK ids, shows done/total, sums the answers, refreshes.
  function bulk(operation, extra) {
    var ids = Array.from(state.selected);
    if (!ids.length) {
      setStatus('select at least one dead letter first', 'error');
      return Promise.resolve();
    }
    state.busy = true;
    updateSelection();
    var total = ids.length;
    var done = 0;
    var sum = { requested: 0, changed: 0, unchanged: [], not_found: [], failed: [],
                redriven: null, outcomes: {} };
    var bar = $('bulk-progress-bar');
    bar.max = total;
    bar.value = 0;
    $('bulk-progress').textContent = '0/' + total;
    $('bulk-result').textContent = '';
    $('bulk-result').className = 'result';
    var chain = Promise.resolve();
    for (var i = 0; i < ids.length; i += CHUNK) {
      (function (chunk) {
        chain = chain.then(function () {
          var body = Object.assign({ ids: chunk }, extra);
          return sendChunk(operation, body, 0).then(function (r) {
            r = r || {};
            sum.requested += r.requested || 0;
            sum.changed += r.changed || 0;
            if (Array.isArray(r.not_found)) sum.not_found = sum.not_found.concat(r.not_found);
            if (Array.isArray(r.unchanged)) sum.unchanged = sum.unchanged.concat(r.unchanged);
            if (Array.isArray(r.failed)) sum.failed = sum.failed.concat(r.failed);
            if (typeof r.redriven === 'number') sum.redriven = (sum.redriven || 0) + r.redriven;
            Object.keys(r.outcomes || {}).forEach(function (k) {
              sum.outcomes[k] = (sum.outcomes[k] || 0) + (r.outcomes[k] || 0);
            });
            done += chunk.length;
            bar.value = done;
            $('bulk-progress').textContent = done + '/' + total;
          });
        });
      })(ids.slice(i, i + CHUNK));
    }
    return chain.then(function () {
      $('bulk-result').textContent = summary(operation, sum);
      $('bulk-result').className = 'result ok';
      setStatus(operation + ' done: ' + sum.changed + ' of ' + total + ' changed', 'ok');
      state.selected.clear();
    }, function (e) {
      $('bulk-result').textContent = summary(operation, sum) + '; stopped after ' + done + '/' +
                                     total + ': ' + e.toString();
      $('bulk-result').className = 'result error';
      showError(e);
    }).then(function () {
      state.busy = false;
      return refreshAfterChange();
    });
  }

  function refreshAfterChange() {
    return Promise.all([loadLetters(), loadAudit(), loadFixers(), loadEngine()]).catch(showError);
  }

  function listInput(id) {
    return $(id).value.split(',').map(function (s) { return s.trim(); })
      .filter(function (s) { return s.length > 0; });
  }

  // ---- wiring ---------------------------------------------------------------------------------

  function showError(e) {
    var msg = e instanceof ApiError ? e.toString() : String(e && e.message ? e.message : e);
    if (e instanceof ApiError && e.status === 403) {
      msg += ' (enter a valid operator token above)';
    }
    setStatus(msg, 'error');
  }

  function refreshPanels() {
    loadReadiness();
    return Promise.all([loadEngine(), loadRetryQueue(), loadBreakers(), loadDegradation(),
                        loadFixers()]);
  }

  function refreshAll() {
    return Promise.all([refreshPanels(), loadLetters(), loadAudit()]).then(function () {
      setStatus('updated ' + new Date().toLocaleTimeString(), 'ok');
    }, showError);
  }

  function schedule() {
    if (state.timer) clearInterval(state.timer);
    state.timer = null;
    if ($('auto-refresh').checked) {
      state.timer = setInterval(function () {
        if (!state.busy && token()) refreshPanels().catch(showError);
      }, REFRESH_MS);
    }
  }

  function init() {
    $('token').value = token();
    $('token-form').addEventListener('submit', function (ev) {
      ev.preventDefault();
      var t = $('token').value.trim();
      if (t) sessionStorage.setItem(TOKEN_KEY, t);
      else sessionStorage.removeItem(TOKEN_KEY);
      refreshAll();
    });
    $('forget-token').addEventListener('click', function () {
      sessionStorage.removeItem(TOKEN_KEY);
      $('token').value = '';
      setStatus('token forgotten', '');
    });
    $('refresh').addEventListener('click', refreshAll);
    $('auto-refresh').addEventListener('change', schedule);

    $('breakers').addEventListener('click', function (ev) {
      var b = ev.target.closest('button[data-name]');
      if (b) breakerAction(b.classList.contains('trip') ? 'trip' : 'reset', b.getAttribute('data-name'));
    });

    $('degradation-form').addEventListener('submit', function (ev) {
      ev.preventDefault();
      var reason = $('degradation-reason-input').value.trim();
      if (!reason) {
        setStatus('a reason is required to set the degradation level', 'error');
        return;
      }
      api('POST', 'api/degradation', { level: $('degradation-select').value, reason: reason })
        .then(function (d) {
          showDegradation(d || {});
          setStatus('degradation level set to ' + text(d && d.level), 'ok');
          return loadAudit();
        }).catch(showError);
    });
    $('degradation-clear').addEventListener('click', function () {
      api('POST', 'api/degradation/clear', {}).then(function (d) {
        showDegradation(d || {});
        setStatus('degradation override cleared', 'ok');
        return loadAudit();
      }).catch(showError);
    });

    $('filters').addEventListener('submit', function (ev) {
      ev.preventDefault();
      state.filters = readFilters();
      state.offset = 0;
      state.selected.clear();
      loadLetters().then(function () { setStatus('filters applied', 'ok'); }, showError);
    });
    $('clear-filters').addEventListener('click', function () {
      ['filter-status', 'filter-type', 'filter-category', 'filter-error-class', 'filter-text']
        .forEach(function (id) { $(id).value = ''; });
      state.filters = {};
      state.offset = 0;
      state.selected.clear();
      loadLetters().catch(showError);
    });
    $('prev-page').addEventListener('click', function () {
      state.offset = Math.max(0, state.offset - pageSize());
      loadLetters().catch(showError);
    });
    $('next-page').addEventListener('click', function () {
      state.offset += pageSize();
      loadLetters().catch(showError);
    });
    $('page-size').addEventListener('change', function () {
      state.offset = 0;
      loadLetters().catch(showError);
    });

    $('letters').addEventListener('change', function (ev) {
      var t = ev.target;
      if (t.id === 'select-page') {
        state.pageIds.forEach(function (id) {
          if (t.checked) state.selected.add(id);
          else state.selected.delete(id);
        });
      } else if (t.classList.contains('select-letter')) {
        if (t.checked) state.selected.add(t.value);
        else state.selected.delete(t.value);
      }
      updateSelection();
    });
    $('letters').addEventListener('click', function (ev) {
      var b = ev.target.closest('button.show-letter');
      if (b) showLetter(b.getAttribute('data-id'));
    });
    $('detail-close').addEventListener('click', function () { $('letter-detail').hidden = true; });
    $('clear-selection').addEventListener('click', function () {
      state.selected.clear();
      updateSelection();
    });

    $('bulk-dismiss').addEventListener('click', function () {
      var reason = $('dismiss-reason').value.trim();
      if (!reason) {
        setStatus('a reason is required to dismiss dead letters', 'error');
        return;
      }
      bulk('dismiss', { reason: reason });
    });
    $('bulk-categorize').addEventListener('click', function () {
      var extra = { category: $('categorize-category').value.trim(),
                    tags: listInput('categorize-tags') };
      var severity = $('categorize-severity').value;
      if (severity) extra.severity = severity;
      bulk('categorize', extra);
    });
    $('bulk-fix').addEventListener('click', function () { bulk('fix', {}); });
    $('bulk-reprocess').addEventListener('click', function () {
      var channels = listInput('reprocess-channels');
      bulk('reprocess', channels.length ? { channels: channels } : {});
    });

    updateSelection();
    schedule();
    document.documentElement.setAttribute('data-console', 'ready');  // for tests
    if (token()) {
      refreshAll();
    } else {
      loadReadiness();
      setStatus('enter an operator token to load the console', '');
    }
  }

  if (document.readyState === 'loading') document.addEventListener('DOMContentLoaded', init);
  else init();
})();
)page";
}

// Its style (served at GET /console.css).
inline std::string_view admin_console_css() noexcept {
    return R"page(/* bulwark console */
* { box-sizing: border-box; }
body {
  margin: 0;
  font: 14px/1.4 system-ui, -apple-system, "Segoe UI", Roboto, "DejaVu Sans", sans-serif;
  color: #1d2430;
  background: #f3f5f8;
}
header {
  display: flex;
  flex-wrap: wrap;
  align-items: center;
  gap: 12px;
  padding: 10px 20px;
  background: #1d2a3a;
  color: #f3f5f8;
}
header h1 { font-size: 18px; margin: 0 12px 0 0; }
header form { display: flex; align-items: center; gap: 6px; margin-left: auto; }
header input[type=password] { width: 220px; }
label.inline { display: inline-flex; align-items: center; gap: 4px; }
input, select, button { font: inherit; }
input[type=text], input[type=password], select {
  padding: 3px 6px;
  border: 1px solid #b8c1cc;
  border-radius: 4px;
  background: #fff;
  color: #1d2430;
}
button {
  padding: 3px 10px;
  border: 1px solid #3d5a80;
  border-radius: 4px;
  background: #3d5a80;
  color: #fff;
  cursor: pointer;
}
button:hover { background: #2c4566; }
button:disabled { background: #c3cad3; border-color: #c3cad3; cursor: default; }
button.link {
  padding: 0;
  border: 0;
  background: none;
  color: #2c5fa0;
  text-decoration: underline;
  font-family: ui-monospace, "DejaVu Sans Mono", monospace;
  font-size: 12px;
}
button.trip { background: #a33a3a; border-color: #a33a3a; }
button.reset { background: #3b7a4a; border-color: #3b7a4a; }
.status {
  margin: 0;
  padding: 6px 20px;
  background: #e4e8ee;
  border-bottom: 1px solid #cfd6df;
  min-height: 2em;
}
.status.error { background: #fbe3e3; color: #8a1f1f; font-weight: 600; }
.status.ok { background: #e3f4e6; color: #1f5a2c; }
main { padding: 16px 20px 40px; }
.panels {
  display: grid;
  grid-template-columns: repeat(auto-fit, minmax(560px, 1fr));
  gap: 16px;
  margin-bottom: 16px;
}
.panel {
  background: #fff;
  border: 1px solid #d6dce4;
  border-radius: 6px;
  padding: 12px 16px;
}
.panel.wide { margin-bottom: 16px; }
.panel h2 { font-size: 16px; margin: 0 0 10px; }
.panel h3 { font-size: 14px; margin: 12px 0 6px; }
.muted { color: #6a7684; font-weight: normal; font-size: 13px; }
.row { display: flex; flex-wrap: wrap; align-items: center; gap: 8px; margin: 6px 0; }
.row label { display: inline-flex; align-items: center; gap: 4px; }
.facts {
  display: grid;
  grid-template-columns: repeat(auto-fill, minmax(130px, 1fr));
  gap: 6px 12px;
  margin: 0 0 8px;
}
.facts .fact { min-width: 0; }
.facts dt { color: #6a7684; font-size: 12px; }
.facts dd { margin: 0; font-weight: 600; overflow-wrap: anywhere; }
table.grid { width: 100%; border-collapse: collapse; font-size: 13px; }
table.grid th {
  text-align: left;
  font-weight: 600;
  color: #4a5563;
  border-bottom: 2px solid #d6dce4;
  padding: 4px 6px;
}
table.grid td { border-bottom: 1px solid #e8ecf1; padding: 4px 6px; vertical-align: top; }
table.grid button { padding: 1px 8px; font-size: 12px; }
table.grid .actions { white-space: nowrap; }
table.grid tr.empty td { color: #6a7684; font-style: italic; }
table.letters td.letter-error {
  max-width: 420px;
  overflow-wrap: anywhere;
  font-family: ui-monospace, "DejaVu Sans Mono", monospace;
  font-size: 12px;
}
table.letters tr.status-dismissed td { color: #7a8592; }
table.letters tr.status-reprocessed td { color: #3b7a4a; }
.state, .badge, .alert, .level {
  display: inline-block;
  padding: 1px 8px;
  border-radius: 10px;
  font-size: 12px;
  font-weight: 600;
  background: #e4e8ee;
  color: #1d2430;
}
.state-closed, .alert-ok, .badge.good, .level-normal { background: #d7f0dc; color: #1f5a2c; }
.state-half_open, .alert-warning, .level-minor, .level-moderate { background: #fbefd0; color: #7a5300; }
.state-open, .state-isolated, .state-forced_open, .alert-critical, .badge.bad,
.level-severe, .level-critical { background: #f8d6d6; color: #8a1f1f; }
.state-disabled { background: #e4e8ee; color: #4a5563; }
.sev-high, .sev-critical { color: #8a1f1f; font-weight: 600; }
.bulk {
  border: 1px solid #e1e6ec;
  border-radius: 6px;
  padding: 6px 12px;
  margin: 8px 0 12px;
  background: #f8fafc;
}
.bulk input[type=text] { min-width: 200px; }
progress { width: 240px; }
.result { margin: 4px 0; min-height: 1.4em; }
.result.ok { color: #1f5a2c; }
.result.error { color: #8a1f1f; font-weight: 600; }
.pager { justify-content: flex-end; }
.detail { border-top: 2px solid #d6dce4; margin-top: 12px; padding-top: 8px; }
.detail pre {
  background: #f3f5f8;
  padding: 8px;
  border-radius: 4px;
  white-space: pre-wrap;
  overflow-wrap: anywhere;
  max-height: 240px;
  overflow: auto;
}
)page";
}

}  // namespace bulwark

#endif  // BULWARK_ADMIN_CONSOLE_PAGE_HPP
