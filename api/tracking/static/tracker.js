/* Trailmark tracker (hand-written, served gzipped) */
(() => {
  'use strict';
  var C = "__TRAILMARK_CONFIG__";
  var W = window, D = document, N = navigator, L = location, H = history;
  var prev = W.trailmark;
  if (prev && prev.tm) return; // included twice
  if (!C || typeof C != 'object' || C.respectDnt && (N.doNotTrack == '1' || N.globalPrivacyControl === true)) {
    W.trailmark = () => {}; // opted out; calls must not throw
    return;
  }
  var TP = 'text/plain;charset=UTF-8'; // CORS-safelisted: no preflight
  var CK = C.cookie || 'tm_vid';
  var noop = () => {};
  var ref = D.referrer; // previous URL after SPA navigations

  // Storage may throw (private mode).
  var lsGet = k => { try { return localStorage.getItem(k) } catch (e) { return null } };
  var lsSet = (k, v) => { try { localStorage.setItem(k, v) } catch (e) {} };
  function cookie(n) {
    try {
      for (var c of D.cookie.split('; ')) if (c.indexOf(n + '=') == 0) return c.slice(n.length + 1);
    } catch (e) {}
    return null;
  }
  function setCookie(n, v, age) {
    try {
      D.cookie = n + '=' + encodeURIComponent(v) + '; path=/; max-age=' + age + '; SameSite=Lax' +
        (L.protocol == 'https:' ? '; Secure' : '');
    } catch (e) {}
  }

  // Token: cookie, else localStorage; re-read as another tab may have a newer one.
  var token = null;
  var waiting = []; // trailmark('visitor', cb) callbacks until the browser has its first token
  function tok() {
    var c = cookie(CK);
    try { c = c && decodeURIComponent(c) } catch (e) {}
    return token = c || lsGet('tm_vid') || token;
  }
  function setTok(t) {
    if (!t || typeof t != 'string') return;
    var changed = t != token;
    token = t;
    setCookie(CK, t, C.cookieAge || 34560000); // the tenant's retention (400 days at most), renewed
    lsSet('tm_vid', t);
    if (changed) forms();
    waiting.splice(0).forEach(f => { try { f(t) } catch (e) {} });
  }
  setTok(tok());
  // analytics withdrawn: no token, no queue, and a marker so this browser sends nothing more
  function forget() {
    setCookie(CK, '', 0);
    lsSet('tm_vid', '');
    lsSet('tm_q', '[]');
    lsSet('tm_no', '1');
    token = null;
    Q = [];
  }

  // v4 UUID; randomUUID exists in secure contexts only
  var uuid = () => crypto.randomUUID ? crypto.randomUUID() : '10000000-1000-4000-8000-100000000000'.replace(/[018]/g,
    c => (c ^ crypto.getRandomValues(new Uint8Array(1))[0] & 15 >> c / 4).toString(16));

  function hit(type, extra) {
    var p = new URLSearchParams(L.search), utm = {}, ids = {}, ck = {}, partner = null;
    var pick = (keys, out, pre) => keys.split(' ').forEach(k => {
      var v = pre == null ? cookie(k) : p.get(pre + k);
      if (v) out[k] = v;
    });
    // a new ad click replaces _fbc (Meta): fbclid verbatim, ms time; never invent _fbp
    var fb = p.get('fbclid'), fc = cookie('_fbc');
    if (fb && (!fc || fc.split('.')[3] != encodeURIComponent(fb))) setCookie('_fbc', 'fb.1.' + Date.now() + '.' + fb, 7776000);
    pick('source medium campaign term content id', utm, 'utm_');
    pick('fbclid gclid gbraid wbraid msclkid ttclid li_fat_id', ids, '');
    pick('_fbc _fbp _ttp', ck);
    (C.partnerParams || []).some(k => partner = p.get(k) || null);
    return Object.assign({
      hit_id: uuid(), type: type, ts: Date.now(), url: L.href, path: L.pathname, title: D.title,
      referrer: ref, utm: utm, click_ids: ids, cookies: ck, partner_code: partner,
      partner_sid: partner && (p.get('sid') || '').slice(0, 100) || null,
      lang: N.language, screen: screen.width + 'x' + screen.height
    }, extra);
  }

  // Queue mirrored in localStorage: a page closed too early retries on the next load.
  function load() {
    try { var q = JSON.parse(lsGet('tm_q')); return Array.isArray(q) ? q.filter(h => h && h.hit_id) : [] }
    catch (e) { return [] }
  }
  function persist(add, del) { // merge: tabs share it; an opt-in site's browser keeps nothing before consent
    if (C.consentMode == 'opt_in' && !tok()) return;
    var ids = add.concat(del).map(h => h.hit_id);
    lsSet('tm_q', JSON.stringify(load().filter(h => ids.indexOf(h.hit_id) < 0).concat(add).slice(-50)));
  }
  var Q = load(), busy = 0, timer = 0, until = 0, fail = 0, hold = 0, solo = {};

  function enqueue(h) {
    if (lsGet('tm_no') == '1') return; // the visitor refused analytics here
    Q.push(h);
    if (Q.length > 50) Q.shift();
    persist([h], []);
    schedule(0);
  }
  function done(b) {
    Q = Q.filter(h => b.indexOf(h) < 0);
    persist([], b);
  }
  function schedule(ms) {
    if (!timer) timer = setTimeout(() => { timer = 0; flush() }, ms);
  }
  // up to 20 hits; a suspect hit (after a 400/413) goes alone
  function take(list) {
    var b = [];
    for (var h of list) {
      var s = solo[h.hit_id];
      if (b.length > 19 || s && b[0]) break;
      b.push(h);
      if (s) break;
    }
    return b;
  }
  var body = b => JSON.stringify({ v: 1, token: tok(), hits: b });
  var post = (url, s, ka) => new Promise(ok => ok(fetch(url, {
    method: 'POST', body: s, keepalive: ka, credentials: 'include', headers: { 'Content-Type': TP }
  })));

  function retry(after) { // 1s, 2s ... 60s, jittered, or Retry-After
    var d = Math.ceil(Math.min(6e4, 1e3 * 2 ** fail++) * (0.75 + Math.random() / 2));
    if (after * 1e3 > d) d = after * 1e3;
    until = Date.now() + d;
    schedule(d);
  }

  // One request in flight, so later hits carry the newest token
  function flush() {
    if (busy || hold || !Q.length) return;
    // timers may fire a little early: wait out the rest of the backoff rather than give up
    if (Date.now() < until) return schedule(until - Date.now());
    clearTimeout(timer); // an early flush (online) replaces a pending backoff timer
    timer = 0;
    var b = busy = take(Q), s = body(b);
    post(C.collect, s, new Blob([s]).size < 6e4) // keepalive limit 64 KB
      .then(r => {
        var st = r.status;
        if (r.ok) {
          fail = 0;
          // keep a new token (an empty answer keeps ours) before dropping the hits: a closing page loses neither
          return r.json().then(j => setTok(j && j.token), noop).then(() => done(b));
        }
        if (st == 408 || st == 429 || st > 499) return retry(+r.headers.get('Retry-After'));
        // rejected: split once so one bad hit doesn't sink the rest
        if (b[1]) b.forEach(h => solo[h.hit_id] = 1);
        else done(b);
      }, () => retry())
      .then(() => { busy = 0; flush() }, () => { busy = 0 });
  }

  // Hidden page: beacon; with no token, fetch so the new token can come back
  function hide() {
    try {
      if (!tok() || !N.sendBeacon) return flush();
      var rest = Q.filter(h => !busy || busy.indexOf(h) < 0), b;
      while (rest[0]) {
        b = take(rest);
        rest = rest.slice(b.length);
        if (!N.sendBeacon(C.collect, new Blob([body(b)], { type: TP }))) break;
        if (!fail) done(b); // server failing: keep them
      }
    } catch (e) {}
  }

  function fill(f) {
    [['tm_token', tok()], ['tm_page', L.href], ['tm_referrer', ref]].forEach(([n, v]) => {
      var i = f.querySelector('input[name="' + n + '"]');
      if (!i) { i = D.createElement('input'); i.type = 'hidden'; i.name = n; f.appendChild(i) }
      i.value = v || '';
    });
  }
  function forms() {
    try { D.querySelectorAll('form[data-trailmark-form]').forEach(fill) } catch (e) {}
  }

  // Email-link code: strip before any hit records the URL, then exchange
  var code = new URLSearchParams(L.search).get('_tmc');
  var ready = Promise.resolve(); // settles once the browser's identity is final (after an exchange)
  if (code != null) {
    try {
      var qs = L.search.slice(1).split('&').filter(kv => kv.split('=')[0] != '_tmc').join('&');
      H.replaceState(H.state, '', L.pathname + (qs && '?' + qs) + L.hash);
    } catch (e) {}
    if (code) {
      hold = 1; // pageview waits for the new token (max 5 s)
      var release = () => { if (hold) { hold = 0; flush() } };
      setTimeout(release, 5e3);
      ready = post(C.exchange, JSON.stringify({ code: code, token: tok() }))
        .then(r => r.ok && r.json()).then(j => setTok(j && j.token)).catch(noop).then(release);
    }
  }

  // SPA: replaceState counts only on a path change (routers use it to tidy the query)
  var lastUrl = L.href, lastKey = L.pathname + L.search, lastPath = L.pathname;
  function nav(push) {
    try {
      var from = lastUrl, key = L.pathname + L.search;
      var changed = push ? key != lastKey : L.pathname != lastPath;
      lastUrl = L.href; lastKey = key; lastPath = L.pathname;
      if (changed) { ref = from; enqueue(hit('pageview')) }
    } catch (e) {}
  }

  function api(cmd, name, props) {
    try {
      if (cmd == 'token') return tok();
      // visitor: the token to pass to a checkout (Stripe client_reference_id), once the browser has one
      if (cmd == 'visitor' && typeof name == 'function') ready.then(() => { var t = tok(); t ? name(t) : waiting.push(name) });
      // whoami: {level, first_name?} for client-side personalization
      if (cmd == 'whoami' && typeof name == 'function') ready.then(() => post(C.whoami, JSON.stringify({ token: tok() })))
        .then(r => r.json()).then(name, noop);
      // consent: the banner's answer, {ads, analytics: true|false}
      if (cmd == 'consent' && name && typeof name == 'object' && ('ads' in name || 'analytics' in name)) ready.then(() => {
        var c = {}, t = tok();
        if ('ads' in name) c.ads = !!name.ads;
        if ('analytics' in name) c.analytics = !!name.analytics;
        var send = t => post(C.consent, JSON.stringify(Object.assign({ token: t }, c)))
          .then(r => r.ok && r.json()).then(j => {
            if (c.analytics === false) return forget();
            if (c.analytics) lsSet('tm_no', '');
            // the first token (an opt-in site gave none before): this page's view, with its UTMs, is stored now
            // (counted already, cookielessly: the flag keeps it from counting twice)
            if (j && j.token) { var first = !tok(); setTok(j.token); if (first) enqueue(hit('pageview', { counted_before_consent: true })) }
          }).catch(noop);
        // granting analytics needs no token; anything else waits for the browser's first one
        t || c.analytics ? send(t) : waiting.push(send);
      });
      // copy props: unserialisable ones must not break the queue
      if ((cmd == 'track' || cmd == 'conversion') && name) {
        var h = hit('event', { event_name: '' + name, props: JSON.parse(JSON.stringify(props || {})) });
        enqueue(h);
        // conversion: its event id (the hit id), for the page's own pixel to deduplicate with (fbq eventID)
        if (cmd == 'conversion') return h.hit_id.replace(/-/g, '');
      }
    } catch (e) {}
  }
  api.tm = 1;
  W.trailmark = api;

  try {
    enqueue(hit('pageview'));
    [].forEach.call(prev && prev.q || [], a => api.apply(null, a));
    ['pushState', 'replaceState'].forEach(m => {
      var f = H[m];
      H[m] = function () { var r = f.apply(this, arguments); nav(m == 'pushState'); return r };
    });
    W.addEventListener('popstate', () => nav(1));
    D.addEventListener('visibilitychange', () => D.visibilityState == 'hidden' && hide());
    W.addEventListener('pagehide', hide);
    W.addEventListener('online', () => { until = 0; flush() });
    // capture: fill forms before the page's own handlers read them
    D.addEventListener('submit', e => {
      try { if (e.target.matches('form[data-trailmark-form]')) fill(e.target) } catch (x) {}
    }, true);
    D.addEventListener('DOMContentLoaded', forms);
    W.addEventListener('load', forms);
    forms();
  } catch (e) {}
})();
