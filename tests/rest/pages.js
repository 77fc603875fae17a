// The benchmark's page server (script/bench rest): the records of a JSON file's first
// collection, rendered once into pages as json-server renders them (`_page`/`_limit`,
// a Link header with rel="next"), then served from memory over keep-alive connections,
// so a benchmark measures the client, not json-server's scan of every record per page.
//
//   node pages.js <db.json> <limit> [--port N]      prints `listening <port>`
'use strict';
const http = require('http');
const fs = require('fs');

const args = process.argv.slice(2);
const db = JSON.parse(fs.readFileSync(args[0], 'utf8'));
const limit = parseInt(args[1], 10);
const i = args.indexOf('--port');
const port = i >= 0 ? parseInt(args[i + 1], 10) : 0;
const name = Object.keys(db)[0];
const recs = db[name];
const pages = [];
for (let p = 0; p * limit < recs.length; p++) pages.push(Buffer.from(JSON.stringify(recs.slice(p * limit, (p + 1) * limit))));

const server = http.createServer((req, res) => {
  const u = new URL(req.url, 'http://' + req.headers.host);
  const page = parseInt(u.searchParams.get('_page') || '1', 10);
  const body = pages[page - 1] || Buffer.from('[]');
  const headers = { 'Content-Type': 'application/json; charset=utf-8', 'Content-Length': body.length, 'X-Total-Count': recs.length };
  if (page < pages.length) {
    u.searchParams.set('_page', String(page + 1));
    headers.Link = `<${u.href}>; rel="next"`;
  }
  res.writeHead(u.pathname === '/' + name ? 200 : 404, headers);
  res.end(body);
});
server.keepAliveTimeout = 30000;
server.listen(port, '127.0.0.1', () => console.log('listening ' + server.address().port));
