// SPDX-License-Identifier: MIT
// ws_broadcast.js - the peer for bench.py's broadcast fan-out row: a node
// `ws` server (Debian node-ws) doing what tusknetd's broadcast handler does,
// each message relayed to every other open connection, nothing back to the
// sender.  node ws_broadcast.js PORT
'use strict';
// Debian's node-ws lives in /usr/share/nodejs, which not every node searches
let WebSocket;
try {
    WebSocket = require('ws');
} catch (e) {
    WebSocket = require('/usr/share/nodejs/ws');
}

const port = Number(process.argv[2]);
const wss = new WebSocket.Server({ host: '127.0.0.1', port, perMessageDeflate: false, clientTracking: true });
wss.on('connection', (ws) => {
    ws.on('message', (data, isBinary) => {
        for (const c of wss.clients)
            if (c !== ws && c.readyState === WebSocket.OPEN)
                c.send(data, { binary: isBinary });
    });
});
wss.on('listening', () => console.log('listening on ' + port));
