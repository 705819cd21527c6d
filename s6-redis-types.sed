# s6-redis-types: the cookie plugin's sealer moved into the plugin kit (shared with the Redis codec)
s/kvctl_plugins\.cookie\.sealer/kvctl.plugin_kit.sealer/g
s/from \.sealer import/from kvctl.plugin_kit.sealer import/g
# the cookie store's private _read_secret is now kvctl.plugin_kit.session_codec.read_secret
s/\b_read_secret(url)/read_secret(url)/g
