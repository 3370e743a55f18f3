// The dashboard served at GET /ui on the admin listener: one static page (inline
// CSS and vanilla JS, no build step, no external assets) that polls /v1/state and /v1/events.

import { createHash } from 'node:crypto'

// The page's own code. It builds every node with textContent (never innerHTML
// with data), so nothing the API returns can become markup. It avoids template
// literals so it can sit inside String.raw here unchanged.
const SCRIPT = String.raw`
(function () {
  'use strict'
  var TOKEN_KEY = 'switchyard.token'
  var COLORS = ['blue', 'green']
  var STATES = ['live', 'draining', 'idle']
  var EVENT_TYPES = ['flip', 'rollback', 'auto_revert', 'targets', 'health', 'drained', 'reload', 'start']
  var KEEP_EVENTS = 200
  var SHOW_EVENTS = 40
  var SVG = 'http://www.w3.org/2000/svg'

  var token = sessionStorage.getItem(TOKEN_KEY) || ''
  var needToken = false
  var pending = null
  var acting = false
  var cards = new Map()
  var events = []
  var lastEventId = null
  var noticeTimer = null

  function $ (id) { return document.getElementById(id) }

  function h (tag, cls, children) {
    var el = document.createElement(tag)
    if (cls) el.className = cls
    if (children !== undefined) add(el, children)
    return el
  }

  function add (el, children) {
    if (!Array.isArray(children)) children = [children]
    children.forEach(function (c) {
      if (c === null || c === undefined || c === false) return
      el.appendChild(typeof c === 'object' ? c : document.createTextNode(String(c)))
    })
    return el
  }

  function svg (tag, attrs) {
    var el = document.createElementNS(SVG, tag)
    Object.keys(attrs).forEach(function (k) { el.setAttribute(k, String(attrs[k])) })
    return el
  }

  function color (x) { return COLORS.indexOf(x) >= 0 ? x : null }
  function other (c) { return c === 'blue' ? 'green' : 'blue' }
  function num (x) { return typeof x === 'number' && isFinite(x) ? x : 0 }
  function list (x) { return Array.isArray(x) ? x : [] }
  function text (x) { return x === null || x === undefined ? '' : String(x) }
  function sum (a) { return list(a).reduce(function (t, x) { return t + num(x) }, 0) }
  function pct (x) { return (num(x) * 100).toFixed(1) + '%' }
  function rate (x) { return x >= 10 ? String(Math.round(x)) : x.toFixed(1) }
  function pad (n) { return n < 10 ? '0' + n : String(n) }
  function clock (d) { return isNaN(d.getTime()) ? '' : pad(d.getHours()) + ':' + pad(d.getMinutes()) + ':' + pad(d.getSeconds()) }
  function secondsUntil (iso) { return Math.max(0, Math.round((new Date(iso).getTime() - Date.now()) / 1000)) }

  /** A color name as a colored chip. */
  function chip (c) {
    var ok = color(c)
    return h('span', 'chip' + (ok ? ' chip-' + ok : ''), text(c))
  }

  // --- the admin API ---------------------------------------------------------

  function api (method, path, body) {
    var headers = { accept: 'application/json' }
    if (token) headers.authorization = 'Bearer ' + token
    var init = { method: method, headers: headers, cache: 'no-store' }
    if (body !== undefined) {
      headers['content-type'] = 'application/json'
      init.body = JSON.stringify(body)
    }
    return fetch(path, init).then(function (res) {
      return res.text().then(function (raw) {
        var data = null
        try { data = raw ? JSON.parse(raw) : null } catch (e) { data = null }
        if (res.status === 401) {
          var denied = new Error('unauthorized')
          denied.unauthorized = true
          throw denied
        }
        if (!res.ok) {
          var err = new Error((data && data.message) || ('HTTP ' + res.status))
          err.body = data
          throw err
        }
        return data
      })
    })
  }

  /** Runs fn every ms, one call at a time; stops while a token is needed. */
  function poller (fn, ms) {
    var timer = null
    var busy = false
    var again = false
    function run () {
      clearTimeout(timer)
      timer = null
      if (busy) { again = true; return }
      busy = true
      fn().catch(pollFailed).then(function () {
        busy = false
        if (needToken) return
        if (again) { again = false; run(); return }
        timer = setTimeout(run, ms)
      })
    }
    return run
  }

  function pollFailed (err) {
    if (err && err.unauthorized) return askToken()
    setConn('bad', 'cannot reach the gateway: ' + text(err && err.message))
  }

  var pollState = poller(function () {
    return api('GET', '/v1/state').then(function (st) {
      render(st || {})
      setConn('ok', 'updated ' + clock(new Date()))
    })
  }, 1000)

  var pollEvents = poller(function () {
    var q = lastEventId === null ? '' : '?since=' + lastEventId
    return api('GET', '/v1/events' + q).then(function (r) { addEvents(list(r && r.events)) })
  }, 2000)

  function setConn (kind, msg) {
    var el = $('conn')
    el.className = 'conn conn-' + kind
    el.textContent = msg
  }

  // --- the token ---------------------------------------------------------------

  function askToken () {
    var wasSet = token !== ''
    needToken = true
    document.body.classList.add('locked')
    $('login').hidden = false
    $('login-msg').textContent = wasSet
      ? 'That token was not accepted. Enter the admin token again.'
      : 'This gateway has an admin token. Enter it to see and change routing; it stays in this browser tab only.'
    $('login').classList.toggle('login-wrong', wasSet)
    setConn('locked', 'admin token required')
    $('token').focus()
  }

  $('login').addEventListener('submit', function (ev) {
    ev.preventDefault()
    token = $('token').value.trim()
    if (!token) return
    sessionStorage.setItem(TOKEN_KEY, token)
    $('token').value = ''
    $('login').hidden = true
    document.body.classList.remove('locked')
    needToken = false
    showForget()
    pollState()
    pollEvents()
    var retry = pending
    pending = null
    if (retry) retry()
  })

  $('forget').addEventListener('click', function () {
    sessionStorage.removeItem(TOKEN_KEY)
    token = ''
    showForget()
    pollState()
  })

  function showForget () { $('forget').hidden = token === '' }

  // --- notices -------------------------------------------------------------------

  function notice (kind, title, body) {
    var el = $('notice')
    clearTimeout(noticeTimer)
    el.className = 'notice notice-' + kind
    el.replaceChildren()
    var close = h('button', 'notice-close', '\u00d7')
    close.type = 'button'
    close.setAttribute('aria-label', 'dismiss')
    close.addEventListener('click', function () { el.hidden = true })
    add(el, [close, h('strong', 'notice-title', title)])
    if (body) add(el, body)
    el.hidden = false
    if (kind === 'ok') noticeTimer = setTimeout(function () { el.hidden = true }, 8000)
  }

  function changesText (changes) {
    return list(changes).map(function (c) {
      return h('span', 'change', [text(c.service) + ' ', chip(c.from), ' \u2192 ', chip(c.to)])
    })
  }

  function refusal (what, err) {
    var body = err.body || {}
    var parts = [h('p', 'notice-msg', text(err.message))]
    var failures = list(body.failures)
    if (failures.length > 0) {
      var ul = h('ul', 'failures')
      failures.forEach(function (f) {
        var li = h('li', null, [h('b', null, text(f.service) + '/' + text(f.color)), ': ' + text(f.reason)])
        var sub = h('ul')
        list(f.targets).forEach(function (tg) { add(sub, h('li', null, text(tg.url) + ' \u2014 ' + text(tg.probe))) })
        list(f.smoke).forEach(function (sm) { add(sub, h('li', null, text(sm.check) + ': ' + text(sm.reason))) })
        if (sub.children.length > 0) li.appendChild(sub)
        ul.appendChild(li)
      })
      parts.push(ul)
    }
    notice('error', what + ' refused' + (body.error ? ' (' + text(body.error) + ')' : ''), parts)
  }

  // --- actions -------------------------------------------------------------------

  function act (question, what, method, path, body, done) {
    if (!window.confirm(question)) return
    function run () {
      setActing(true)
      api(method, path, body).then(function (r) {
        notice('ok', what + ' done', done(r || {}))
        pollState()
        pollEvents()
      }).catch(function (err) {
        if (err && err.unauthorized) {
          pending = run
          askToken()
          return
        }
        refusal(what, err || new Error('failed'))
      }).then(function () { setActing(false) })
    }
    run()
  }

  function setActing (on) {
    acting = on
    cards.forEach(function (c) { if (c.data) updateButtons(c, c.data) })
  }

  function servicePath (name, action) { return '/v1/services/' + encodeURIComponent(name) + '/' + action }

  function flip (c) {
    var from = color(c.data.live)
    var to = other(from)
    act('Flip ' + c.name + ' from ' + from + ' to ' + to + '?\nNew requests go to ' + to + ' at once; ' + from + ' drains.',
      'Flip of ' + c.name, 'POST', servicePath(c.name, 'flip'), {}, function (r) {
        var ch = changesText(r.changes)
        return ch.length > 0 ? [h('p', 'notice-msg', ch), h('p', 'notice-sub', 'generation ' + num(r.generation))] : h('p', 'notice-msg', 'nothing changed')
      })
  }

  function rollback (c) {
    var back = color(c.data.previous)
    act('Roll ' + c.name + ' back to ' + back + '?', 'Rollback of ' + c.name, 'POST', '/v1/rollback', { services: [c.name] }, function (r) {
      return [h('p', 'notice-msg', changesText(r.changes)), h('p', 'notice-sub', 'generation ' + num(r.generation))]
    })
  }

  function drain (c) {
    var col = other(color(c.data.live))
    act('Drain ' + col + ' of ' + c.name + '?\nIts remaining requests and WebSockets are closed at the drain deadline.',
      'Drain of ' + c.name + ' ' + col, 'POST', servicePath(c.name, 'drain'), {}, function (r) {
        if (r.state === 'idle') return h('p', 'notice-msg', [chip(r.color), ' is idle: nothing left in flight'])
        return h('p', 'notice-msg', [chip(r.color), ' draining: ' + num(r.inflight) + ' in-flight, ' + num(r.websockets) + ' WebSockets, deadline ' + clock(new Date(r.deadline))])
      })
  }

  // --- services ------------------------------------------------------------------

  function button (label, cls, onClick) {
    var b = h('button', 'btn ' + cls, label)
    b.type = 'button'
    b.addEventListener('click', onClick)
    return b
  }

  function stat (label) {
    var value = h('b', null, '0')
    return { root: h('div', 'stat', [value, h('span', null, label)]), value: value }
  }

  function makeEnv (col) {
    var e = { color: col }
    e.badge = h('span', 'badge')
    e.rate = stat('req/s')
    e.errors = stat('errors')
    e.inflight = stat('in-flight')
    e.ws = stat('WebSockets')
    e.area = svg('polygon', { class: 'spark-area' })
    e.line = svg('polyline', { class: 'spark-line', 'vector-effect': 'non-scaling-stroke' })
    e.errBars = svg('path', { class: 'spark-err', 'vector-effect': 'non-scaling-stroke' })
    var spark = svg('svg', { class: 'spark', viewBox: '0 0 240 48', preserveAspectRatio: 'none', role: 'img' })
    var title = svg('title', {})
    title.textContent = col + ': requests and errors per second over the last minute'
    add(spark, [title, e.area, e.line, e.errBars])
    e.legend = h('div', 'spark-legend')
    e.drain = h('div', 'drain')
    e.healthy = h('span', 'healthy')
    e.targets = h('ul', 'targets')
    e.root = h('section', 'env env-' + col, [
      h('div', 'env-head', [h('span', 'swatch'), h('h3', null, col), e.badge]),
      h('div', 'stats', [e.rate.root, e.errors.root, e.inflight.root, e.ws.root]),
      spark, e.legend, e.drain,
      h('div', 'targets-head', ['Targets', e.healthy]),
      e.targets,
    ])
    return e
  }

  function makeCard (name) {
    var c = { name: name, data: null, envs: {} }
    c.route = h('div', 'route')
    c.liveColor = h('span', 'live-color')
    c.live = h('div', 'live', [h('span', 'live-label', 'live'), c.liveColor])
    c.prev = h('div', 'prev')
    c.guard = h('div', 'guard')
    c.guardText = h('div', 'guard-text')
    c.guardBar = h('div', 'guard-fill')
    add(c.guard, [c.guardText, h('div', 'guard-bar', c.guardBar)])
    var envs = h('div', 'envs')
    COLORS.forEach(function (col) {
      c.envs[col] = makeEnv(col)
      envs.appendChild(c.envs[col].root)
    })
    c.flipBtn = button('Flip', 'btn-flip', function () { flip(c) })
    c.rollbackBtn = button('Roll back', 'btn-rollback', function () { rollback(c) })
    c.drainBtn = button('Drain', 'btn-drain', function () { drain(c) })
    c.root = h('article', 'svc', [
      h('header', 'svc-head', [h('div', 'svc-title', [h('h2', null, name), c.route, c.prev]), c.live]),
      c.guard, envs,
      h('footer', 'actions', [c.flipBtn, c.rollbackBtn, c.drainBtn]),
    ])
    c.root.setAttribute('data-service', name)
    return c
  }

  function updateButtons (c, d) {
    var live = color(d.live)
    var to = other(live)
    var prev = color(d.previous)
    c.flipBtn.textContent = 'Flip to ' + to
    c.flipBtn.className = 'btn btn-flip btn-' + to
    c.flipBtn.disabled = acting || !live
    c.rollbackBtn.textContent = prev && prev !== live ? 'Roll back to ' + prev : 'Roll back'
    c.rollbackBtn.disabled = acting || !prev || prev === live
    c.rollbackBtn.title = c.rollbackBtn.disabled && !acting ? 'nothing to roll back' : ''
    c.drainBtn.textContent = 'Drain ' + to
    c.drainBtn.disabled = acting || !live
  }

  function updateCard (c, d) {
    c.data = d
    var live = color(d.live)
    c.root.setAttribute('data-live', live || '')
    c.liveColor.textContent = text(d.live)
    c.live.className = 'live' + (live ? ' live-' + live : '')
    var route = d.route || {}
    c.route.textContent = (route.host ? text(route.host) + ' ' : '') + text(route.pathPrefix || '/')
    c.prev.replaceChildren()
    if (color(d.previous)) add(c.prev, ['previously ', chip(d.previous)])
    updateGuard(c, d.guard)
    COLORS.forEach(function (col) { updateEnv(c.envs[col], (d.environments || {})[col] || {}) })
    updateButtons(c, d)
  }

  function updateGuard (c, g) {
    c.guard.hidden = !(g && g.active)
    if (c.guard.hidden) return
    var left = secondsUntil(g.endsAt)
    var total = Math.max(1, (new Date(g.endsAt).getTime() - new Date(g.startedAt).getTime()) / 1000)
    c.guardText.replaceChildren()
    add(c.guardText, [
      h('b', null, 'Guard'), ' watching ', chip(g.color), ' for ' + left + ' s more \u00b7 ',
      num(g.errors) + ' errors / ' + num(g.requests) + ' requests (' + pct(g.errorRate) + ')',
      ' \u00b7 reverts to ', chip(g.revertsTo), ' above ' + pct(g.maxErrorRate) + ' after ' + num(g.minRequests) + ' requests',
    ])
    c.guardBar.style.width = Math.min(100, Math.max(0, 100 * left / total)) + '%'
  }

  function updateEnv (e, env) {
    var state = STATES.indexOf(env.state) >= 0 ? env.state : 'idle'
    e.root.className = 'env env-' + e.color + ' st-' + state
    e.badge.className = 'badge badge-' + state
    e.badge.textContent = state
    var recent = env.recent || {}
    var reqs = list(recent.requests)
    var errs = list(recent.errors)
    var total = sum(reqs)
    var failed = sum(errs)
    var seconds = Math.max(1, reqs.length)
    e.rate.value.textContent = rate(total / seconds)
    e.errors.value.textContent = total > 0 ? pct(failed / total) : '\u2013'
    e.errors.root.classList.toggle('stat-bad', failed > 0)
    e.inflight.value.textContent = String(num(env.inflight))
    e.ws.value.textContent = String(num(env.websockets))
    drawSpark(e, reqs, errs)
    var peak = reqs.reduce(function (m, x) { return Math.max(m, num(x)) }, 0)
    e.legend.textContent = 'last ' + seconds + ' s \u00b7 ' + total + ' requests, ' + failed + ' errors \u00b7 peak ' + peak + '/s'
    var dr = env.drain
    e.drain.hidden = !dr
    if (dr) {
      e.drain.textContent = (dr.closing ? 'closing what is left' : 'draining, deadline in ' + secondsUntil(dr.deadline) + ' s') + (dr.sticky ? ' \u00b7 sticky sessions' : '')
    }
    var targets = list(env.targets)
    e.healthy.textContent = num(env.healthy) + ' of ' + targets.length + ' healthy'
    e.targets.replaceChildren()
    if (targets.length === 0) e.targets.appendChild(h('li', 'target-none', 'no targets'))
    targets.forEach(function (tg) {
      var ejected = tg.ejectedUntil ? 'ejected ' + secondsUntil(tg.ejectedUntil) + ' s' : ''
      var li = h('li', 'target', [
        h('span', 'hdot ' + (tg.healthy ? 'hdot-ok' : 'hdot-bad')),
        h('span', 'target-url', text(tg.url)),
        h('span', 'target-meta', (ejected || text(tg.probe)) + ' \u00b7 ' + num(tg.inflight) + ' in-flight'),
      ])
      li.title = text(tg.url)
      add(e.targets, li)
    })
  }

  function drawSpark (e, reqs, errs) {
    var n = Math.max(2, reqs.length)
    var max = Math.max(1, reqs.reduce(function (m, x) { return Math.max(m, num(x)) }, 0))
    function points (values) {
      return values.map(function (v, i) {
        return (i * 240 / (n - 1)).toFixed(1) + ',' + (46 - num(v) / max * 42).toFixed(1)
      }).join(' ')
    }
    var line = points(reqs)
    e.line.setAttribute('points', line)
    e.area.setAttribute('points', reqs.length > 0 ? '0,48 ' + line + ' 240,48' : '')
    // Errors are red ticks up from the floor, only in the seconds that had any.
    var bars = ''
    errs.forEach(function (v, i) {
      if (num(v) > 0) bars += 'M' + (i * 240 / (n - 1)).toFixed(1) + ',48V' + Math.min(46, 46 - num(v) / max * 42).toFixed(1)
    })
    e.errBars.setAttribute('d', bars)
  }

  function render (st) {
    $('gen').textContent = 'generation ' + num(st.generation)
    var services = st.services && typeof st.services === 'object' ? st.services : {}
    var names = Object.keys(services).sort()
    var box = $('services')
    names.forEach(function (name, i) {
      var c = cards.get(name)
      if (!c) {
        c = makeCard(name)
        cards.set(name, c)
      }
      if (box.children[i] !== c.root) box.insertBefore(c.root, box.children[i] || null)
      updateCard(c, services[name] || {})
    })
    cards.forEach(function (c, name) {
      if (names.indexOf(name) < 0) {
        c.root.remove()
        cards.delete(name)
      }
    })
    $('empty').hidden = names.length > 0
  }

  // --- events --------------------------------------------------------------------

  function summary (ev) {
    switch (ev.type) {
      case 'flip':
      case 'rollback':
      case 'auto_revert': {
        var ch = changesText(ev.changes)
        return ch.length > 0 ? ch : 'nothing changed'
      }
      case 'targets':
        return [text(ev.service) + ' ', chip(ev.color), ' \u2192 ' + list(ev.to).map(text).join(', ') + (ev.forced ? ' (forced)' : '')]
      case 'health':
        return [text(ev.target) + ': ' + text(ev.from) + ' \u2192 ', h('span', ev.healthy ? 'ok' : 'bad', text(ev.to))]
      case 'drained':
        return [text(ev.service) + ' ', chip(ev.color), ' drained (' + text(ev.how) + ', ' + (num(ev.durationMs) / 1000).toFixed(1) + ' s)']
      case 'reload': {
        var parts = []
        if (list(ev.added).length) parts.push('added ' + list(ev.added).map(text).join(', '))
        if (list(ev.removed).length) parts.push('removed ' + list(ev.removed).map(text).join(', '))
        if (list(ev.updated).length) parts.push('updated ' + list(ev.updated).map(text).join(', '))
        return parts.length > 0 ? 'config reloaded: ' + parts.join('; ') : 'config reloaded'
      }
      case 'start':
        return 'gateway started'
      default:
        return text(ev.type)
    }
  }

  function addEvents (fresh) {
    var added = false
    fresh.forEach(function (ev) {
      if (!ev || typeof ev.id !== 'number') return
      if (lastEventId !== null && ev.id <= lastEventId) return
      events.push(ev)
      lastEventId = ev.id
      added = true
    })
    if (!added && $('events').children.length > 0) return
    if (events.length > KEEP_EVENTS) events = events.slice(events.length - KEEP_EVENTS)
    var body = $('events')
    body.replaceChildren()
    events.slice(-SHOW_EVENTS).reverse().forEach(function (ev) {
      var type = EVENT_TYPES.indexOf(ev.type) >= 0 ? ev.type : 'other'
      var what = h('td', 'ev-what', summary(ev))
      if (ev.reason) add(what, h('div', 'ev-reason', text(ev.reason)))
      add(body, h('tr', 'ev ev-' + type, [
        h('td', 'ev-time', clock(new Date(ev.time))),
        h('td', 'ev-kind', h('span', 'ev-type', text(ev.type).replace('_', ' '))),
        what,
        h('td', 'ev-who', text(ev.actor)),
      ]))
    })
    $('no-events').hidden = events.length > 0
  }

  showForget()
  pollState()
  pollEvents()
})()
`

const STYLE = String.raw`
:root {
  --blue: #2563eb; --blue-soft: #eff6ff; --blue-line: #bfdbfe;
  --green: #16a34a; --green-soft: #f0fdf4; --green-line: #bbf7d0;
  --amber: #b45309; --amber-soft: #fef3c7; --red: #dc2626; --red-soft: #fef2f2;
  --ink: #0f172a; --muted: #64748b; --line: #e2e8f0; --bg: #f1f5f9; --card: #fff;
  font-family: system-ui, -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial, sans-serif;
  color: var(--ink); background: var(--bg); font-size: 14px; line-height: 1.45;
}
* { box-sizing: border-box; }
[hidden], .locked .services, .locked .events { display: none !important; }
body { margin: 0; }
h1, h2, h3 { margin: 0; font-weight: 650; }
.top { display: flex; align-items: center; justify-content: space-between; gap: 16px; padding: 14px 28px; background: var(--card); border-bottom: 1px solid var(--line); }
.brand { display: flex; align-items: center; gap: 10px; }
.brand h1 { font-size: 18px; letter-spacing: -0.01em; }
.logo { display: inline-flex; gap: 3px; }
.logo i { display: block; width: 10px; height: 22px; border-radius: 3px; }
.logo .b { background: var(--blue); } .logo .g { background: var(--green); }
.meta { display: flex; align-items: center; gap: 16px; color: var(--muted); font-size: 13px; }
.conn::before { content: ""; display: inline-block; width: 8px; height: 8px; border-radius: 50%; margin-right: 6px; background: var(--muted); vertical-align: 1px; }
.conn-ok::before { background: var(--green); }
.conn-bad { color: var(--red); } .conn-bad::before { background: var(--red); }
.conn-locked { color: var(--amber); } .conn-locked::before { background: var(--amber); }
main { max-width: 1280px; margin: 0 auto; padding: 24px 28px 40px; }
button { font: inherit; cursor: pointer; }
.link { background: none; border: 0; color: var(--muted); text-decoration: underline; padding: 0; }
.notice { position: relative; border-radius: 10px; padding: 12px 40px 12px 16px; margin-bottom: 20px; border: 1px solid; }
.notice-ok { background: var(--green-soft); border-color: var(--green-line); }
.notice-error { background: var(--red-soft); border-color: #fecaca; color: #7f1d1d; }
.notice-title { display: block; }
.notice-msg { margin: 4px 0 0; } .notice-sub { margin: 2px 0 0; color: var(--muted); font-size: 12px; }
.notice-close { position: absolute; top: 8px; right: 10px; border: 0; background: none; font-size: 18px; color: inherit; opacity: .6; }
.failures { margin: 6px 0 0; padding-left: 20px; } .failures ul { padding-left: 18px; color: #991b1b; }
.login { max-width: 460px; margin: 40px auto; background: var(--card); border: 1px solid var(--line); border-radius: 12px; padding: 24px; box-shadow: 0 1px 3px rgba(15, 23, 42, .06); }
.login h2 { font-size: 17px; } .login p { color: var(--muted); margin: 6px 0 14px; }
.login-wrong p { color: var(--red); }
.login .row { display: flex; gap: 8px; }
.login input { flex: 1; font: inherit; padding: 8px 10px; border: 1px solid #cbd5e1; border-radius: 8px; }
.login input:focus { outline: 2px solid var(--blue); outline-offset: 1px; }
.services { display: grid; grid-template-columns: repeat(auto-fill, minmax(560px, 1fr)); gap: 20px; align-items: start; }
.empty { color: var(--muted); }
.svc { background: var(--card); border: 1px solid var(--line); border-radius: 14px; box-shadow: 0 1px 3px rgba(15, 23, 42, .06); overflow: hidden; }
.svc-head { display: flex; justify-content: space-between; align-items: center; gap: 16px; padding: 18px 20px 14px; }
.svc-head h2 { font-size: 20px; letter-spacing: -0.01em; }
.route { font-family: ui-monospace, SFMono-Regular, Menlo, Consolas, monospace; font-size: 12.5px; color: var(--muted); margin-top: 2px; }
.prev { font-size: 12px; color: var(--muted); margin-top: 4px; }
.live { display: flex; flex-direction: column; align-items: center; min-width: 128px; padding: 8px 18px 10px; border-radius: 12px; color: #fff; background: var(--muted); }
.live-blue { background: var(--blue); } .live-green { background: var(--green); }
.live-label { font-size: 11px; text-transform: uppercase; letter-spacing: .12em; opacity: .85; }
.live-color { font-size: 26px; font-weight: 750; line-height: 1.1; text-transform: uppercase; letter-spacing: .04em; }
.guard { margin: 0 20px 14px; padding: 10px 12px; border-radius: 10px; background: var(--amber-soft); color: #78350f; font-size: 13px; }
.guard-bar { height: 4px; border-radius: 2px; background: rgba(180, 83, 9, .18); margin-top: 8px; overflow: hidden; }
.guard-fill { height: 100%; background: var(--amber); }
.envs { display: grid; grid-template-columns: 1fr 1fr; gap: 12px; padding: 0 20px; }
.env { border: 1px solid var(--line); border-top: 4px solid; border-radius: 10px; padding: 12px 14px; min-width: 0; }
.env-blue { border-top-color: var(--blue); } .env-green { border-top-color: var(--green); }
.env-blue.st-live { background: var(--blue-soft); border-color: var(--blue-line); border-top-color: var(--blue); }
.env-green.st-live { background: var(--green-soft); border-color: var(--green-line); border-top-color: var(--green); }
.st-idle { opacity: .8; }
.env-head { display: flex; align-items: center; gap: 8px; }
.env-head h3 { font-size: 15px; text-transform: capitalize; flex: 1; }
.swatch { width: 12px; height: 12px; border-radius: 3px; }
.env-blue .swatch { background: var(--blue); } .env-green .swatch { background: var(--green); }
.badge { font-size: 11px; font-weight: 650; text-transform: uppercase; letter-spacing: .06em; padding: 2px 8px; border-radius: 999px; }
.badge-idle { background: #e2e8f0; color: #475569; }
.badge-draining { background: var(--amber-soft); color: var(--amber); }
.env-blue .badge-live { background: var(--blue); color: #fff; } .env-green .badge-live { background: var(--green); color: #fff; }
.stats { display: flex; justify-content: space-between; gap: 10px; margin: 12px 0 8px; }
.stat b { display: block; font-size: 18px; font-weight: 650; font-variant-numeric: tabular-nums; }
.stat span { font-size: 11px; color: var(--muted); }
.stat-bad b { color: var(--red); }
.spark { display: block; width: 100%; height: 44px; }
.spark-area { stroke: none; opacity: .14; }
.spark-line { fill: none; stroke-width: 1.75; stroke-linejoin: round; }
.spark-err { fill: none; stroke: var(--red); stroke-width: 2.5; }
.env-blue .spark-area { fill: var(--blue); } .env-blue .spark-line { stroke: var(--blue); }
.env-green .spark-area { fill: var(--green); } .env-green .spark-line { stroke: var(--green); }
.spark-legend { font-size: 11px; color: var(--muted); margin-top: 2px; }
.drain { margin-top: 8px; font-size: 12px; color: var(--amber); font-weight: 600; }
.targets-head { display: flex; justify-content: space-between; margin-top: 12px; font-size: 11px; text-transform: uppercase; letter-spacing: .06em; color: var(--muted); font-weight: 600; }
.healthy { text-transform: none; letter-spacing: 0; font-weight: 500; }
.targets { list-style: none; margin: 6px 0 0; padding: 0; }
.target { display: grid; grid-template-columns: 8px 1fr; column-gap: 8px; align-items: center; padding: 5px 0; border-top: 1px solid rgba(148, 163, 184, .25); font-size: 12.5px; }
.target-url { font-family: ui-monospace, SFMono-Regular, Menlo, Consolas, monospace; overflow: hidden; text-overflow: ellipsis; white-space: nowrap; min-width: 0; }
.target-meta { grid-column: 2; color: var(--muted); font-size: 12px; }
.target-none { color: var(--muted); font-size: 12.5px; padding: 4px 0; }
.hdot { width: 8px; height: 8px; border-radius: 50%; flex: none; }
.hdot-ok { background: #22c55e; } .hdot-bad { background: var(--red); }
.actions { display: flex; gap: 8px; padding: 16px 20px 18px; }
.btn { padding: 8px 14px; border-radius: 8px; border: 1px solid #cbd5e1; background: #fff; color: var(--ink); font-weight: 550; }
.btn:hover:not(:disabled) { background: #f8fafc; }
.btn:disabled { opacity: .45; cursor: default; }
.btn-flip { color: #fff; border-color: transparent; }
.btn-flip.btn-blue { background: var(--blue); } .btn-flip.btn-green { background: var(--green); }
.btn-flip:hover:not(:disabled) { filter: brightness(1.08); }
.btn-flip.btn-blue:hover:not(:disabled) { background: var(--blue); } .btn-flip.btn-green:hover:not(:disabled) { background: var(--green); }
.btn-drain { margin-left: auto; }
.chip { display: inline-block; padding: 0 7px; border-radius: 999px; font-size: 12px; font-weight: 600; background: #e2e8f0; line-height: 1.6; }
.chip-blue { background: var(--blue); color: #fff; } .chip-green { background: var(--green); color: #fff; }
.change + .change::before { content: " \00b7  "; color: var(--muted); }
.events { margin-top: 28px; background: var(--card); border: 1px solid var(--line); border-radius: 14px; padding: 16px 20px; box-shadow: 0 1px 3px rgba(15, 23, 42, .06); }
.events h2 { font-size: 16px; margin-bottom: 8px; }
.events table { width: 100%; border-collapse: collapse; }
.events th { text-align: left; font-size: 11px; text-transform: uppercase; letter-spacing: .06em; color: var(--muted); font-weight: 600; padding: 6px 8px; border-bottom: 1px solid var(--line); }
.events td { padding: 7px 8px; border-bottom: 1px solid #f1f5f9; vertical-align: top; }
.ev-time { font-variant-numeric: tabular-nums; color: var(--muted); white-space: nowrap; width: 80px; }
.ev-type { display: inline-block; font-size: 11px; font-weight: 650; text-transform: uppercase; letter-spacing: .05em; padding: 1px 8px; border-radius: 6px; background: #e2e8f0; color: #334155; white-space: nowrap; }
.ev-flip .ev-type { background: #e0e7ff; color: #3730a3; }
.ev-rollback .ev-type { background: var(--amber-soft); color: var(--amber); }
.ev-auto_revert .ev-type { background: #fee2e2; color: #b91c1c; }
.ev-health .ev-type, .ev-drained .ev-type { background: #f1f5f9; color: var(--muted); }
.ev-kind { width: 1%; padding-right: 16px; }
.ev-who { color: var(--muted); white-space: nowrap; width: 1%; }
.ev-reason { font-size: 12px; color: var(--muted); margin-top: 1px; }
.ev-what .ok { color: var(--green); font-weight: 600; } .ev-what .bad { color: var(--red); font-weight: 600; }
.no-events { color: var(--muted); margin: 8px 0 0; }
@media (max-width: 680px) {
  .services { grid-template-columns: 1fr; }
  .envs { grid-template-columns: 1fr; }
  .top, main { padding-left: 14px; padding-right: 14px; }
}
`

const BODY = `<header class="top">
  <div class="brand"><span class="logo" aria-hidden="true"><i class="b"></i><i class="g"></i></span><h1>Switchyard</h1></div>
  <div class="meta"><span id="gen">generation \u2013</span><span id="conn" class="conn">connecting\u2026</span><button id="forget" class="link" type="button" hidden>forget token</button></div>
</header>
<main>
  <div id="notice" class="notice" role="alert" hidden></div>
  <form id="login" class="login" hidden>
    <h2>Admin token</h2>
    <p id="login-msg"></p>
    <div class="row"><input id="token" name="token" type="password" autocomplete="current-password" placeholder="token" aria-label="admin token"><button class="btn btn-flip btn-blue" type="submit">Unlock</button></div>
  </form>
  <section id="services" class="services" aria-label="services"></section>
  <p id="empty" class="empty" hidden>No services configured.</p>
  <section class="events" aria-label="recent events">
    <h2>Recent events</h2>
    <table><thead><tr><th>Time</th><th>Type</th><th>What</th><th>By</th></tr></thead><tbody id="events"></tbody></table>
    <p id="no-events" class="no-events">No events yet.</p>
  </section>
</main>`

/** A CSP source for one inline block: the browser runs it only if the hash matches. */
function hashSource (text: string): string {
  return `'sha256-${createHash('sha256').update(text, 'utf8').digest('base64')}'`
}

export const UI_HTML = `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Switchyard</title>
<link rel="icon" href="data:,">
<style>${STYLE}</style>
</head>
<body>
${BODY}
<script>${SCRIPT}</script>
</body>
</html>
`

/** Only the page's own inline script and style run, and it talks only to this origin. */
export const UI_CSP = [
  "default-src 'none'",
  `script-src ${hashSource(SCRIPT)}`,
  `style-src ${hashSource(STYLE)}`,
  "connect-src 'self'",
  'img-src data:',
  "base-uri 'none'",
  "form-action 'none'",
  "frame-ancestors 'none'",
].join('; ')

export const UI_HEADERS: Readonly<Record<string, string | number>> = {
  'content-type': 'text/html; charset=utf-8',
  'content-length': Buffer.byteLength(UI_HTML),
  'content-security-policy': UI_CSP,
  'cache-control': 'no-store',
  'x-content-type-options': 'nosniff',
  'x-frame-options': 'DENY',
  'referrer-policy': 'no-referrer',
}
