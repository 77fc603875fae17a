// The REST API of the tests: json-server 0.17.4 (npm; its router serves the JSON file
// with `_page`/`_limit` and Link headers, `_start`/`_limit`, `field_gte` filters,
// `_sort`, POST/PATCH/PUT) behind a few middlewares for what json-server does not do:
// authentication, throttling, failures, slow and cut responses, a body envelope with a
// cursor and a next URL, a malformed page.
//
//   node server.js <db.json> [--port N] [--die-after N] [--token-ttl S]
//
// Prints `listening <port>` once ready. Needs NODE_PATH to hold json-server (see
// script/services.sh `install_json_server`).
//
// A request's path is `/<scenario segments>/<resource>`; each segment before the
// resource is one of (`~` separates arguments):
//   bearer~TOKEN            Authorization: Bearer TOKEN required
//   basic~USER~PASS         HTTP basic required
//   keyh~NAME~VALUE         header NAME: VALUE required
//   keyq~NAME~VALUE         query parameter NAME=VALUE required
//   oauth                   a live token of POST /oauth/token required (client
//                           `anchovies`, secret `oauth-s3cret`, basic or body)
//   revoke~ID~K             the K-th request of counter ID revokes every token first
//   fail~ID~STATUS~N        the first N requests of counter ID answer STATUS (429 and
//                           503 with `Retry-After: 1`)
//   faildate~ID~N           the first N requests answer 429 with Retry-After as an HTTP date
//   reset~ID~N              the first N requests are dropped without a response
//   cut~ID~N                the first N responses stop half-way (connection dropped)
//   slow~MS                 answer MS milliseconds late
//   env                     {data: {items: [...]}, meta: {next_cursor, total},
//                           links: {next}}; `cursor` and `limit` parameters page it
//   bad~PAGE                page PAGE (`_page` or env cursor) is malformed JSON
// GET /__stats: {requests, tokens_issued, by_path}.
'use strict';
const jsonServer = require('json-server');

const args = process.argv.slice(2);
const db = args[0];
const opt = (name, dflt) => {
  const i = args.indexOf(name);
  return i >= 0 ? args[i + 1] : dflt;
};
const port = parseInt(opt('--port', '0'), 10);
let dieAfter = parseInt(opt('--die-after', '0'), 10);
const tokenTtl = parseFloat(opt('--token-ttl', '3600'));

const server = jsonServer.create();
const router = jsonServer.router(db);
const counters = {};
const tokens = {};
const stats = { requests: 0, tokens_issued: 0, by_path: {} };
const count = (id) => (counters[id] = (counters[id] || 0) + 1);

server.use(jsonServer.bodyParser);

server.get('/__stats', (req, res) => res.json(stats));

server.post('/oauth/token', (req, res) => {
  let id = req.body.client_id, secret = req.body.client_secret;
  const h = req.headers.authorization || '';
  if (h.startsWith('Basic ')) {
    const [u, p] = Buffer.from(h.slice(6), 'base64').toString().split(':');
    id = decodeURIComponent(u); secret = decodeURIComponent(p);
  }
  if (req.body.grant_type !== 'client_credentials' || id !== 'anchovies' || secret !== 'oauth-s3cret') {
    return res.status(401).json({ error: 'invalid_client' });
  }
  const t = 'tok-' + Math.random().toString(36).slice(2) + Date.now().toString(36);
  tokens[t] = Date.now() + tokenTtl * 1000;
  stats.tokens_issued++;
  res.json({ access_token: t, token_type: 'bearer', expires_in: tokenTtl });
});

server.use((req, res, next) => {
  stats.requests++;
  const segs = req.path.split('/').filter((s) => s.length);
  const env = { envelope: false, bad: null };
  const known = ['bearer', 'basic', 'keyh', 'keyq', 'oauth', 'revoke', 'fail', 'faildate', 'reset', 'cut', 'slow', 'env', 'bad'];
  let i = 0;
  const checks = [];
  for (; i < segs.length; i++) {
    const [kind, ...a] = decodeURIComponent(segs[i]).split('~');
    if (!known.includes(kind)) break;
    checks.push([kind, a]);
  }
  const resource = '/' + segs.slice(i).join('/');
  stats.by_path[resource] = (stats.by_path[resource] || 0) + 1;
  const deny = (why) => res.status(401).json({ error: why });
  let delay = 0;
  for (const [kind, a] of checks) {
    if (kind === 'bearer' && req.headers.authorization !== 'Bearer ' + a[0]) return deny('bad bearer token');
    if (kind === 'basic' && req.headers.authorization !== 'Basic ' + Buffer.from(a[0] + ':' + a[1]).toString('base64')) return deny('bad basic credentials');
    if (kind === 'keyh' && req.headers[a[0].toLowerCase()] !== a[1]) return deny('bad api key header');
    if (kind === 'keyq' && req.query[a[0]] !== a[1]) return deny('bad api key parameter');
    if (kind === 'revoke' && count(a[0]) === parseInt(a[1], 10)) for (const t of Object.keys(tokens)) delete tokens[t];
    if (kind === 'oauth') {
      const t = (req.headers.authorization || '').replace(/^Bearer /, '');
      if (!tokens[t] || tokens[t] < Date.now()) return deny('invalid or expired token');
    }
    if (kind === 'fail' && count(a[0]) <= parseInt(a[2], 10)) {
      const st = parseInt(a[1], 10);
      if (st === 429 || st === 503) res.set('Retry-After', '1');
      return res.status(st).json({ error: 'injected ' + st });
    }
    if (kind === 'faildate' && count(a[0]) <= parseInt(a[1], 10)) {
      res.set('Retry-After', new Date(Date.now() + 1500).toUTCString());
      return res.status(429).json({ error: 'slow down' });
    }
    if (kind === 'reset' && count(a[0]) <= parseInt(a[1], 10)) return req.socket.destroy();
    if (kind === 'cut' && count(a[0]) <= parseInt(a[1], 10)) env.cut = true;
    if (kind === 'slow') delay = parseInt(a[0], 10);
    if (kind === 'env') env.envelope = true;
    if (kind === 'bad') env.bad = a[0];
  }
  // Drop the scenario and API-key parameters before the router filters by the query.
  for (const [kind, a] of checks) if (kind === 'keyq') delete req.query[a[0]];
  if (env.envelope) {
    const limit = parseInt(req.query.limit || '10', 10);
    const page = req.query.cursor ? parseInt(Buffer.from(req.query.cursor, 'base64').toString(), 10) : 1;
    delete req.query.cursor; delete req.query.limit;
    req.query._page = String(page); req.query._limit = String(limit);
    env.page = page; env.limit = limit;
  } else {
    env.page = req.query._page;
  }
  req.anch = env;
  req.url = resource + (req.url.includes('?') ? req.url.slice(req.url.indexOf('?')) : '');
  if (delay) setTimeout(next, delay); else next();
});

router.render = (req, res) => {
  const env = req.anch || {};
  let body = res.locals.data;
  if (env.envelope && Array.isArray(body)) {
    const total = parseInt(res.get('X-Total-Count') || '0', 10);
    const more = env.page * env.limit < total;
    const nextCursor = more ? Buffer.from(String(env.page + 1)).toString('base64') : null;
    const u = new URL(req.protocol + '://' + req.get('host') + req.originalUrl);
    if (more) u.searchParams.set('cursor', nextCursor);
    body = { meta: { total, next_cursor: nextCursor }, data: { items: body }, links: { next: more ? u.pathname + u.search : null } };
  }
  let text = JSON.stringify(body);
  if (env.bad && String(env.page) === env.bad) text = text.replace(/\}\s*\]/, '},]');
  if (dieAfter > 0 && req.method === 'GET' && --dieAfter === 0) {
    setTimeout(() => process.exit(1), 10);
  }
  res.type('application/json');
  if (env.cut) {
    res.setHeader('Content-Length', Buffer.byteLength(text));
    res.write(text.slice(0, Math.floor(text.length / 2)));
    return setTimeout(() => res.socket.destroy(), 50);
  }
  res.send(text);
};

server.use(router);
const listener = server.listen(port, '127.0.0.1', () => {
  console.log('listening ' + listener.address().port);
});
