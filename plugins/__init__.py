"""Built-in plugins (registered through the same hooks third parties use) and
industry templates shipped as packages."""

#: Modules the plugin manager registers before any third-party plugin.
DEFAULT_PLUGINS = ("loomwork.plugins.core_fields", "loomwork.plugins.core_functions", "loomwork.plugins.core_writes",
                   "loomwork.plugins.core_widgets", "loomwork.plugins.core_approval_actions",
                   "loomwork.plugins.email_notifier", "loomwork.plugins.crm_sample")
