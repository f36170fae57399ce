"""The operator's console on the operator port: what the gateway keeps for it (each plane's
DataPlane conditions, recent refusals, an hour of per-plane history) and the page that shows it.

`conditions`, `refusals` and `history` are bounded stores fed as things happen (`state` holds
one replica's and joins its workers'); `markup` is a tiny element tree rendered both to HTML (the
page works without JavaScript) and to JSON (the page's script rebuilds itself from it every few
seconds, text as text only); `view` turns the console's document into that tree; `page` serves
it; `text` cuts what others wrote to a bound.
"""
