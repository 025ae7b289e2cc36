// Make a Node.js program that can only listen on TCP listen on a unix socket instead.
//
// Loaded with NODE_OPTIONS="--require <this file>" (spec/tools/ungit.toml), with
//   MLWS_UNIX_LISTEN_PORT    the TCP port the program is told to use (e.g. ungit's --port)
//   MLWS_UNIX_LISTEN_SOCKET  the unix socket to use instead (in the runtime's 0700 folder)
// Every net.Server.listen() on that port becomes a listen on the socket (any host), so the
// program opens no TCP port at all. HTTP clients in the same process tree that connect to
// localhost/127.0.0.1 on that port are sent to the socket too: ungit's credentials-helper (run by
// git, started by ungit, so it inherits NODE_OPTIONS) asks http://localhost:<port>/api/credentials.
// Connections accepted on the socket report remoteAddress "127.0.0.1": over the socket the peer is
// always a process of the workspace user (the folder is 0700), which is what ungit's
// localhost-only check on /api/credentials means.
'use strict';
const fs = require('fs');
const net = require('net');
const http = require('http');

const port = Number(process.env.MLWS_UNIX_LISTEN_PORT);
const socketPath = process.env.MLWS_UNIX_LISTEN_SOCKET;

if (port && socketPath) {
  const isOurPort = (value) => value !== undefined && value !== null && Number(value) === port;

  const originalListen = net.Server.prototype.listen;
  net.Server.prototype.listen = function (...args) {
    let callback;
    if (typeof args[args.length - 1] === 'function') callback = args.pop();
    const first = args[0];
    const wanted = first !== null && typeof first === 'object' ? first.port : first;
    if (!isOurPort(wanted)) {
      return originalListen.apply(this, callback ? [...args, callback] : args);
    }
    try {
      fs.unlinkSync(socketPath); // a stale socket of an earlier run
    } catch (error) {
      if (error.code !== 'ENOENT') throw error;
    }
    this.on('connection', (connection) => {
      Object.defineProperty(connection, 'remoteAddress', { value: '127.0.0.1', configurable: true });
    });
    const options = { path: socketPath };
    if (first !== null && typeof first === 'object' && first.backlog) options.backlog = first.backlog;
    return originalListen.call(this, options, callback);
  };

  const localHosts = new Set(['localhost', '127.0.0.1', '::1', '[::1]', undefined, null, '']);
  const originalCreateConnection = http.Agent.prototype.createConnection;
  http.Agent.prototype.createConnection = function (options, callback) {
    if (options && !options.path && !options.socketPath && isOurPort(options.port) && localHosts.has(options.host)) {
      options = Object.assign({}, options, { path: socketPath });
      delete options.port;
      delete options.host;
    }
    return originalCreateConnection.call(this, options, callback);
  };
}
