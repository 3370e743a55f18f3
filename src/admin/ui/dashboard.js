// The dashboard's code, inlined into index.html by src/admin/ui.ts and allowed by its hash:
// polls /v1/state (services, the store and fleet, pinning's kept generations), /v1/events, /v1/releases and
// each service's shadow comparison; flips, rolls back, drains,
// stops shadow traffic and steers releases through the admin API.
// It builds every node with textContent (never innerHTML with data), so nothing
// the API returns can become markup.
(function () {
  'use strict'
  var TOKEN_KEY = 'switchyard.token'
  var COLORS = ['blue', 'green']
  var STATES = ['live', 'draining', 'idle']
  var EVENT_TYPES = ['flip', 'rollback', 'auto_revert', 'targets', 'health', 'drained', 'reload', 'start', 'import', 'release', 'shadow']
  var RELEASE_PHASES = ['deploying', 'warming', 'testing', 'shifting', 'verifying', 'draining', 'done', 'reverted', 'aborted', 'failed']
  var RELEASE_ENDS = ['done', 'reverted', 'aborted', 'failed']
  var VERDICTS = ['pass', 'fail', 'inconclusive']
  var KEEP_EVENTS = 200
  var SHOW_EVENTS = 40
  var SHADOW_TOP = 10
  var PIN_RESULTS = ['pinned', 'expired', 'untrusted', 'invalid', 'unavailable']
  var SVG = 'http://www.w3.org/2000/svg'

  var token = sessionStorage.getItem(TOKEN_KEY) || ''
  var needToken = false
  var pending = null
  var acting = false
  var cards = new Map()
  var releaseCards = new Map()
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
        try { data = raw ? JSON.parse(raw) : null } catch { data = null }
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

  var pollReleases = poller(function () {
    return api('GET', '/v1/releases').then(function (r) {
      renderReleases(list(r && r.releases))
    }, function (err) {
      // A gateway from before releases answers 404: no panel, and nothing wrong.
      if (err && err.body && err.body.error === 'not_found') return renderReleases([])
      throw err
    })
  }, 1000)

  // One GET per service (the shadow view is per service); a gateway from before
  // shadow traffic answers 404 not_found: no panel, and nothing wrong.
  var pollShadow = poller(function () {
    var names = []
    cards.forEach(function (c, name) { names.push(name) })
    return Promise.all(names.map(function (name) {
      return api('GET', servicePath(name, 'shadow')).then(function (sh) {
        var c = cards.get(name)
        if (c) updateShadow(c, sh || {})
      }, function (err) {
        if (err && err.body && err.body.error === 'not_found') {
          var c = cards.get(name)
          if (c) updateShadow(c, {})
          return
        }
        throw err
      })
    }))
  }, 2000)

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
    pollReleases()
    pollShadow()
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
        pollReleases()
        pollShadow()
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
    releaseCards.forEach(function (c) { if (c.data) updateReleaseButtons(c, c.data) })
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
    c.shadow = makeShadow(c)
    c.root = h('article', 'svc', [
      h('header', 'svc-head', [h('div', 'svc-title', [h('h2', null, name), c.route, c.prev]), c.live]),
      c.guard, c.shadow.root, envs,
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
    c.shadow.stopBtn.disabled = acting
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

  // --- shadow traffic ----------------------------------------------------------------

  function stopShadow (c) {
    act('Stop shadow traffic to the idle color of ' + c.name + '?\nThe counts so far stay until the next comparison starts.',
      'Stopping shadow traffic of ' + c.name, 'DELETE', servicePath(c.name, 'shadow'), {}, function () {
        return h('p', 'notice-msg', 'shadow traffic of ' + c.name + ' stopped')
      })
  }

  function makeShadow (c) {
    var s = {}
    s.state = h('span', 'shadow-state')
    s.sent = stat('sent')
    s.compared = stat('compared')
    s.matched = stat('matched')
    s.differed = stat('differed')
    s.noise = stat('noise')
    s.dropped = stat('dropped')
    s.gateText = h('div', 'shadow-gate-text')
    s.gateFill = h('div', 'shadow-gate-fill')
    s.gateMark = h('div', 'shadow-gate-mark')
    s.gate = h('div', 'shadow-gate', [s.gateText, h('div', 'shadow-gate-bar', [s.gateFill, s.gateMark])])
    s.notes = h('div', 'shadow-notes')
    s.rows = h('tbody')
    s.top = h('table', 'shadow-top', [h('thead', null, h('tr', null, ['Where', 'Pairs', 'Live', 'Idle'].map(function (x) { return h('th', null, x) }))), s.rows])
    s.none = h('p', 'shadow-none')
    s.noiseList = h('ul', 'shadow-noise-list')
    s.noiseBox = h('div', 'shadow-noise', [h('span', 'shadow-noise-label', 'Noise, not counted: '), s.noiseList])
    s.stopBtn = button('Stop shadow', 'btn-shadow-stop', function () { stopShadow(c) })
    s.root = h('section', 'shadow', [
      h('div', 'shadow-head', [h('b', null, 'Shadow traffic'), s.state, s.stopBtn]),
      h('div', 'stats shadow-stats', [s.sent.root, s.compared.root, s.matched.root, s.differed.root, s.noise.root, s.dropped.root]),
      s.gate, s.notes, s.top, s.none, s.noiseBox,
    ])
    s.root.hidden = true
    return s
  }

  function untilText (x) {
    if (x === null || x === undefined) return ''
    var d = new Date(typeof x === 'number' ? x : String(x))
    return isNaN(d.getTime()) ? '' : ' \u00b7 until ' + clock(d)
  }

  /** Shown while shadow traffic is on, or while a comparison has counts to read. */
  function updateShadow (c, sh) {
    var s = c.shadow
    var compared = num(sh.compared)
    s.root.hidden = !(sh.active === true || compared > 0 || num(sh.sent) > 0)
    if (s.root.hidden) return
    // The answer names its colors; the state's live color stands in for an answer that does not.
    var live = color(sh.live) || color(c.data && c.data.live)
    var idle = live ? other(live) : null
    s.state.replaceChildren()
    add(s.state, sh.active === true
      ? ['on \u00b7 ', typeof sh.sample === 'number' ? pct(sh.sample).replace('.0%', '%') + ' of ' : '', live ? chip(live) : 'live', ' copied to ', idle ? chip(idle) : 'idle',
          untilText(sh.until), sh.source === 'api' ? ' \u00b7 started by the admin API' : sh.source === 'config' ? ' \u00b7 from the config' : '']
      : 'off \u00b7 the last comparison')
    s.stopBtn.hidden = sh.active !== true
    s.stopBtn.disabled = acting
    var differed = num(sh.differed)
    var share = compared > 0 ? differed / compared : 0
    s.sent.value.textContent = String(num(sh.sent))
    s.compared.value.textContent = String(compared)
    s.matched.value.textContent = String(num(sh.matched))
    s.differed.value.textContent = String(differed) + (compared > 0 ? ' (' + pct(share) + ')' : '')
    s.noise.value.textContent = String(num(sh.noise))
    s.dropped.value.textContent = String(num(sh.dropped))
    s.differed.root.classList.toggle('stat-bad', differed > 0)
    // The gate's limit, when the API tells it (the shadow answer's or the state's `gate`).
    var gate = (sh.gate && typeof sh.gate === 'object') ? sh.gate : (c.data && c.data.gate && typeof c.data.gate === 'object' ? c.data.gate : {})
    var max = typeof gate.maxShadowDiff === 'number' && isFinite(gate.maxShadowDiff) ? gate.maxShadowDiff : null
    var min = typeof gate.minShadowCompared === 'number' ? gate.minShadowCompared : 200
    s.gate.hidden = max === null
    if (max !== null) {
      var over = compared >= min && share > max
      var judged = compared >= min
      s.gate.className = 'shadow-gate' + (over ? ' shadow-gate-over' : '')
      s.gateText.textContent = 'differing ' + (compared > 0 ? pct(share) : '\u2013') + ' of ' + compared + ' pairs \u00b7 gate ' + pct(max) +
        (judged ? (over ? ' \u00b7 a flip to ' + (idle || 'the idle color') + ' is refused' : ' \u00b7 within the gate') : ' \u00b7 judged from ' + min + ' pairs')
      // The bar spans twice the limit, so the limit sits in the middle.
      var span = Math.max(max * 2, 0.0001)
      s.gateFill.style.width = Math.min(100, 100 * share / span) + '%'
      s.gateMark.style.left = '50%'
    }
    var drops = sh.drops && typeof sh.drops === 'object' ? sh.drops : {}
    var notes = Object.keys(drops).filter(function (k) { return num(drops[k]) > 0 }).map(function (k) { return num(drops[k]) + ' ' + text(k).replace('_', ' ') })
    var parts = []
    if (notes.length > 0) parts.push('dropped: ' + notes.join(', '))
    if (num(sh.bodyNotCompared) > 0) parts.push(num(sh.bodyNotCompared) + ' compared by status and headers only (body above maxBody)')
    if (num(sh.probes) > 0) parts.push(num(sh.probes) + ' noise probes')
    s.notes.textContent = parts.join(' \u00b7 ')
    s.notes.hidden = parts.length === 0
    var top = list(sh.top).filter(function (p) { return p && typeof p === 'object' }).slice(0, SHADOW_TOP)
    s.rows.replaceChildren()
    top.forEach(function (p) {
      var ex = p.example && typeof p.example === 'object' ? p.example : {}
      var row = h('tr', null, [
        h('td', 'shadow-where', h('code', null, text(p.where))),
        h('td', 'shadow-count', String(num(p.count))),
        h('td', 'shadow-ex', h('code', null, text(ex.live))),
        h('td', 'shadow-ex', h('code', null, text(ex.idle))),
      ])
      row.setAttribute('data-where', text(p.where))
      // Where the place differed (method and path shape), most pairs first: a hover away.
      var eps = list(p.endpoints).filter(function (e) { return e && typeof e === 'object' })
      if (eps.length > 0) row.title = 'on ' + eps.map(function (e) { return text(e.endpoint) + ' (' + num(e.count) + ')' }).join(', ')
      s.rows.appendChild(row)
    })
    s.top.hidden = top.length === 0
    s.none.hidden = top.length > 0
    s.none.textContent = compared === 0 ? 'nothing compared yet' : 'no differences counted'
    var noise = list(sh.noiseWhere).filter(function (p) { return p && typeof p === 'object' })
    s.noiseBox.hidden = noise.length === 0
    s.noiseList.replaceChildren()
    // Noise is learnt per endpoint: the same place may be listed once for each.
    noise.forEach(function (p) { add(s.noiseList, h('li', null, [h('code', null, text(p.where)), (typeof p.endpoint === 'string' && p.endpoint !== '' ? ' on ' + p.endpoint : '') + ' \u00d7' + num(p.count)])) })
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
    renderStore(st.store, st.fleet)
    renderPinning(st.pinning)
  }

  // --- call chains (generation pinning) ------------------------------------------------

  function duration (ms) {
    var s = num(ms) / 1000
    // 2 s, 2.5 s, 5 min: no trailing .0
    function n (x) { return String(Number(rate(x))) }
    return s < 60 ? n(s) + ' s' : s < 3600 ? n(s / 60) + ' min' : n(s / 3600) + ' h'
  }

  /** The panel only with `pinning` on: its counts and the generations still kept (newest first), or nothing kept. */
  function renderPinning (p) {
    var on = !!p && typeof p === 'object'
    $('pinning').hidden = !on
    if (!on) return
    var trust = list(p.trust).map(text).join(', ')
    $('pinning-note').textContent = 'generations kept ' + duration(p.keep) + ' after a flip' + (trust ? ' \u00b7 baggage believed from ' + trust : '') +
      (num(p.floor) > 0 ? ' \u00b7 none below ' + num(p.floor) + ' (rolled back)' : '')
    var requests = p.requests && typeof p.requests === 'object' ? p.requests : {}
    var stats = $('pinning-stats')
    stats.replaceChildren()
    PIN_RESULTS.forEach(function (r) {
      var s = stat(r)
      s.value.textContent = String(num(requests[r]))
      s.root.setAttribute('data-result', r)
      if (r !== 'pinned' && num(requests[r]) > 0) s.root.classList.add('stat-bad')
      stats.appendChild(s.root)
    })
    var kept = list(p.kept).filter(function (k) { return k && typeof k === 'object' })
    var body = $('pinning-kept')
    body.replaceChildren()
    kept.forEach(function (k) {
      var row = h('tr', 'kept', [
        h('td', 'kept-gen', String(num(k.generation))),
        h('td', 'kept-retired', clock(new Date(k.retiredAt))),
        h('td', 'kept-expires', clock(new Date(k.expiresAt)) + ' (in ' + secondsUntil(k.expiresAt) + ' s)'),
        h('td', 'kept-pinned', String(num(k.pinned))),
      ])
      row.setAttribute('data-generation', String(num(k.generation)))
      body.appendChild(row)
    })
    $('pinning-none').hidden = kept.length > 0
  }

  // --- the store and the fleet -------------------------------------------------------

  function ago (ms) {
    var s = Math.max(0, num(ms)) / 1000
    return s < 60 ? s.toFixed(1) + ' s ago' : Math.floor(s / 60) + ' min ago'
  }

  /** A link only for an http(s) URL: anything else a replica registered stays text. */
  function adminLink (url) {
    if (typeof url !== 'string' || !/^https?:\/\//i.test(url)) return text(url) || '\u2013'
    var a = h('a', 'replica-admin', url)
    a.href = url.replace(/\/+$/, '') + '/ui'
    a.target = '_blank'
    a.rel = 'noopener noreferrer'
    return a
  }

  /** The header badge for any store; the fleet panel only for an etcd store with replicas. */
  function renderStore (store, fleet) {
    var badge = $('store')
    badge.hidden = !store
    var replicas = list(fleet && fleet.replicas)
    $('fleet').hidden = !(store && store.kind === 'etcd' && replicas.length > 0)
    if (!store) return
    var etcd = store.kind === 'etcd'
    var up = !etcd || store.connected === true
    badge.className = 'store store-' + (etcd ? (up ? 'ok' : 'bad') : 'file')
    badge.textContent = etcd ? 'etcd ' + (up ? 'connected' : 'unreachable') + ' \u00b7 revision ' + num(store.revision) : 'state file'
    badge.title = text(store.where)
    if ($('fleet').hidden) return
    $('fleet-down').hidden = up
    $('fleet-leader').textContent = fleet.leader ? 'leader ' + text(fleet.leader) : 'no leader'
    $('fleet-sync').textContent = fleet.converged ? 'converged' : 'converging'
    $('fleet-sync').className = 'fleet-sync' + (fleet.converged ? '' : ' fleet-sync-behind')
    var top = replicas.reduce(function (m, r) { return Math.max(m, num(r && r.generation)) }, 0)
    var body = $('replicas')
    body.replaceChildren()
    replicas.forEach(function (r) {
      if (!r) return
      var lagging = num(r.generation) < top
      var me = r.id === fleet.id
      var row = h('tr', 'replica' + (lagging ? ' replica-lagging' : '') + (me ? ' replica-this' : ''), [
        h('td', 'replica-id', [text(r.id), me ? h('span', 'tag', 'this') : null]),
        h('td', null, adminLink(r.admin)),
        h('td', 'replica-gen', [String(num(r.generation)), lagging ? h('span', 'tag tag-lagging', 'lagging') : null]),
        h('td', 'replica-age', ago(r.ageMs)),
        h('td', null, r.leader ? h('span', 'tag tag-leader', 'leader') : ''),
      ])
      row.setAttribute('data-replica', text(r.id))
      body.appendChild(row)
    })
  }

  // --- releases ------------------------------------------------------------------

  function isRunning (r) { return RELEASE_ENDS.indexOf(r.phase) < 0 }
  function knownPhase (p) { return RELEASE_PHASES.indexOf(p) >= 0 ? p : 'other' }
  function ms (x) { return typeof x === 'number' && isFinite(x) ? (x < 10 ? x.toFixed(1) : String(Math.round(x))) + ' ms' : '\u2013' }
  function ratePct (x) { return typeof x === 'number' && isFinite(x) ? pct(x) : '\u2013' }
  function releasePath (id, action) { return '/v1/releases/' + encodeURIComponent(id) + '/' + action }

  function releaseAction (c, action) {
    var id = c.id
    var questions = {
      pause: 'Pause release ' + id + '?\nIt holds its current weight until resumed.',
      resume: 'Resume release ' + id + '?',
      promote: 'Promote release ' + id + '?\nEvery service of it sends all its traffic to the new color now; the verify window still runs.',
      abort: 'Abort release ' + id + '?\nEvery service of it goes back to the old color at once.',
    }
    var label = action.charAt(0).toUpperCase() + action.slice(1)
    act(questions[action], label + ' of ' + id, 'POST', releasePath(id, action), {}, function (r) {
      return h('p', 'notice-msg', 'release ' + text(r.id) + ': ' + text(r.phase) + (r.pausedAt ? ' (paused)' : ''))
    })
  }

  function makeRelease (id) {
    var c = { id: id, data: null }
    c.phase = h('span', 'rel-phase')
    c.meta = h('div', 'rel-meta')
    c.timeline = h('ol', 'timeline')
    c.progress = h('div', 'rel-progress')
    c.outcome = h('p', 'rel-outcome')
    c.verdictAt = h('div', 'rel-verdict-at')
    c.rows = h('tbody')
    var heads = ['Service', 'Colors', 'Weight', 'Error rate new / old', 'p50 new / old', 'p99 new / old', 'Verdict']
    c.pauseBtn = button('Pause', 'btn-pause', function () { releaseAction(c, 'pause') })
    c.resumeBtn = button('Resume', 'btn-resume', function () { releaseAction(c, 'resume') })
    c.promoteBtn = button('Promote to 100%', 'btn-promote', function () { releaseAction(c, 'promote') })
    c.abortBtn = button('Abort', 'btn-abort', function () { releaseAction(c, 'abort') })
    c.actions = h('footer', 'actions rel-actions', [c.pauseBtn, c.resumeBtn, c.promoteBtn, c.abortBtn])
    c.root = h('article', 'rel', [
      h('header', 'rel-head', [h('div', 'rel-title', [h('h3', null, id), c.phase]), c.meta]),
      c.timeline, c.progress, c.outcome, c.verdictAt,
      h('table', 'rel-services', [h('thead', null, h('tr', null, heads.map(function (x) { return h('th', null, x) }))), c.rows]),
      c.actions,
    ])
    c.root.setAttribute('data-release', id)
    return c
  }

  /** The phases a release goes through, each step of a shift its own stop. */
  function plan (r) {
    var stops = ['deploying', 'warming', 'testing'].map(function (p) { return { phase: p } })
    var steps = list(r.steps)
    if (steps.length === 0) stops.push({ phase: 'shifting', weight: 100 })
    steps.forEach(function (s, i) { stops.push({ phase: 'shifting', step: i, weight: num(s && s.weight) }) })
    return stops.concat(['verifying', 'draining', 'done'].map(function (p) { return { phase: p } }))
  }

  function stopLabel (x) {
    return text(x.phase) + (x.phase === 'shifting' && typeof x.weight === 'number' ? ' ' + num(x.weight) + '%' : '')
  }

  function updateTimeline (c, r) {
    var running = isRunning(r)
    var history = list(r.history).filter(function (x) { return x && typeof x === 'object' })
    c.timeline.replaceChildren()
    history.forEach(function (x, i) {
      var last = i === history.length - 1
      var cls = 'tl tl-' + knownPhase(x.phase)
      if (last) cls += running ? ' tl-current' : (x.phase === 'done' ? ' tl-ok' : ' tl-bad')
      else cls += ' tl-past'
      var li = h('li', cls, [h('span', 'tl-label', stopLabel(x)), h('span', 'tl-time', clock(new Date(x.at)))])
      if (last && running) li.setAttribute('aria-current', 'step')
      c.timeline.appendChild(li)
    })
    if (!running) return
    // What is still to come, greyed: the stops of the plan after the current one.
    var stops = plan(r)
    var at = -1
    stops.forEach(function (x, i) {
      if (x.phase === r.phase && (x.phase !== 'shifting' || x.step === undefined || x.step === r.step)) at = i
    })
    if (at < 0) return
    stops.slice(at + 1).forEach(function (x) { c.timeline.appendChild(h('li', 'tl tl-next', h('span', 'tl-label', stopLabel(x)))) })
  }

  function verdictCell (v) {
    if (!v) return h('td', 'rel-verdict', '\u2013')
    var outcome = VERDICTS.indexOf(v.outcome) >= 0 ? v.outcome : 'inconclusive'
    var cell = h('td', 'rel-verdict', h('span', 'verdict verdict-' + outcome, outcome))
    list(v.reasons).forEach(function (why) { add(cell, h('div', 'verdict-reason', text(why))) })
    return cell
  }

  function pair (a, b) { return h('span', 'pair', [h('b', null, a), ' / ', b]) }

  function updateRelease (c, r) {
    c.data = r
    var phase = knownPhase(r.phase)
    var running = isRunning(r)
    c.root.className = 'rel rel-' + phase + (running ? ' rel-running' : ' rel-ended')
    c.root.setAttribute('data-phase', phase)
    c.phase.className = 'rel-phase rel-phase-' + phase
    c.phase.textContent = text(r.phase) + (r.pausedAt ? ' \u00b7 paused' : '')
    c.meta.textContent = 'started ' + clock(new Date(r.startedAt)) + (r.actor ? ' by ' + text(r.actor) : '') + (r.reason ? ' \u00b7 ' + text(r.reason) : '')
    updateTimeline(c, r)
    var steps = list(r.steps)
    var weight = num(r.weight)
    var where = steps.length === 0 ? 'all at once' : (r.phase === 'shifting' && num(r.step) >= 0 ? 'step ' + (num(r.step) + 1) + ' of ' + steps.length : steps.length + ' steps')
    c.progress.textContent = running
      ? where + ' \u00b7 ' + weight + '% of traffic on the new color' + (r.pausedAt ? ' \u00b7 paused since ' + clock(new Date(r.pausedAt)) : '')
      : 'ended ' + clock(new Date(r.updatedAt)) + ' \u00b7 ' + where
    c.outcome.hidden = !r.outcome
    c.outcome.textContent = text(r.outcome)
    var verdicts = list(r.verdicts)
    var last = verdicts[verdicts.length - 1]
    c.verdictAt.textContent = last
      ? 'last verdict ' + clock(new Date(last.at)) + ' at ' + num(last.weight) + '% (' + (last.final ? 'end of a hold' : 'interim look') + ')'
      : running ? 'no verdict yet' : 'no verdict recorded'
    var services = r.services && typeof r.services === 'object' ? r.services : {}
    c.rows.replaceChildren()
    Object.keys(services).forEach(function (name) {
      var s = services[name] || {}
      var v = last && last.services ? last.services[name] : undefined
      var e = (v && v.errors) || {}
      var l = (v && v.latency) || {}
      var en = e.new || {}
      var eo = e.old || {}
      var ln = l.new || {}
      var lo = l.old || {}
      var bar = h('div', 'wbar-fill' + (color(s.to) ? ' wbar-' + color(s.to) : ''))
      bar.style.width = Math.min(100, Math.max(0, weight)) + '%'
      var errCell = h('td', 'rel-num', pair(ratePct(en.rate), ratePct(eo.rate)))
      errCell.title = num(en.errors) + ' of ' + num(en.requests) + ' new, ' + num(eo.errors) + ' of ' + num(eo.requests) + ' old'
      var row = h('tr', null, [
        h('td', 'rel-svc', [text(name), s.version ? h('span', 'tag', text(s.version)) : null]),
        h('td', null, [chip(s.from), ' \u2192 ', chip(s.to)]),
        h('td', 'rel-weight', [h('span', null, weight + '%'), h('div', 'wbar', bar)]),
        errCell,
        h('td', 'rel-num', pair(ms(ln.p50Ms), ms(lo.p50Ms))),
        h('td', 'rel-num', pair(ms(ln.p99Ms), ms(lo.p99Ms))),
        verdictCell(v),
      ])
      row.setAttribute('data-service', text(name))
      c.rows.appendChild(row)
    })
    updateReleaseButtons(c, r)
  }

  /** Only the actions the phase allows: pause/resume/abort while running, promote while shifting. */
  function updateReleaseButtons (c, r) {
    var running = isRunning(r)
    var paused = !!r.pausedAt
    c.actions.hidden = !running
    c.pauseBtn.hidden = !running || paused
    c.resumeBtn.hidden = !running || !paused
    c.promoteBtn.hidden = !running || r.phase !== 'shifting'
    c.abortBtn.hidden = !running
    ;[c.pauseBtn, c.resumeBtn, c.promoteBtn, c.abortBtn].forEach(function (b) { b.disabled = acting })
  }

  /** Running releases, then the last one that ended (the list comes newest first). */
  function renderReleases (all) {
    var valid = all.filter(function (r) { return r && typeof r === 'object' && r.id !== undefined })
    var shown = valid.filter(isRunning)
    var ended = valid.filter(function (r) { return !isRunning(r) })[0]
    if (ended) shown.push(ended)
    $('releases').hidden = shown.length === 0
    var box = $('release-list')
    var ids = shown.map(function (r) { return text(r.id) })
    shown.forEach(function (r, i) {
      var id = text(r.id)
      var c = releaseCards.get(id)
      if (!c) {
        c = makeRelease(id)
        releaseCards.set(id, c)
      }
      if (box.children[i] !== c.root) box.insertBefore(c.root, box.children[i] || null)
      updateRelease(c, r)
    })
    releaseCards.forEach(function (c, id) {
      if (ids.indexOf(id) < 0) {
        c.root.remove()
        releaseCards.delete(id)
      }
    })
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
      case 'import':
        return 'state imported at generation ' + num(ev.generation)
      case 'shadow': {
        // start (with its sample and end), stop, or expired (the sessions that ran out, several services at once).
        var who = ev.service !== undefined ? text(ev.service) : list(ev.services).map(text).join(', ')
        if (ev.action === 'start') return who + ': shadow traffic on, ' + pct(ev.sample).replace('.0%', '%') + ' of requests copied' + untilText(ev.until)
        if (ev.action === 'expired') return who + ': shadow traffic ended (its duration ran out)'
        return who + ': shadow traffic stopped'
      }
      case 'release':
        return text(ev.release) + ' ' + text(ev.phase) + (typeof ev.weight === 'number' ? ' \u00b7 ' + num(ev.weight) + '%' : '') + (ev.outcome ? ': ' + text(ev.outcome) : '')
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
  pollReleases()
  pollShadow()
})()
