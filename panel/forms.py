"""Forms of the browser panel. They only collect text: sizes, names and limits are parsed
and checked by the services (panel.services.validation), whose errors name the field they
belong to and are shown next to it."""
from __future__ import annotations

from django import forms
from django.utils.translation import gettext_lazy as _

from panel.models import OSTemplate
from panel.services.validation import parse_size


class VECreateForm(forms.Form):
    """Create a VE in the current tenant: template, hostname and resources (OpenVZ units)."""

    template = forms.ChoiceField(label=_("OS template"))
    hostname = forms.CharField(label=_("Hostname"), max_length=253, required=False,
                               help_text=_("Letters, digits, hyphens and dots. Empty: ve<VEID>."))
    plan = forms.ChoiceField(label=_("Plan"), required=False)
    memory = forms.CharField(label=_("Memory"), max_length=20, required=False,
                             help_text=_("For example 256M or 1G. Empty: the plan's or the default."))
    swap = forms.CharField(label=_("Swap"), max_length=20, required=False)
    disk = forms.CharField(label=_("Disk"), max_length=20, required=False, help_text=_("For example 2G."))
    numproc = forms.CharField(label=_("Process limit (NPROC)"), max_length=12, required=False)
    cpuunits = forms.CharField(label=_("CPU weight (cpuunits)"), max_length=12, required=False)
    cpulimit = forms.CharField(label=_("CPU limit (percent of one core, 0 = none)"), max_length=12, required=False)
    root_password = forms.CharField(label=_("Root password"), required=False, max_length=200,
                                    widget=forms.PasswordInput(render_value=False),
                                    help_text=_("Optional. Sent to the node only as a hash."))

    SIZE_FIELDS = ("memory", "swap", "disk")          # text like 512M; a bare number is MiB
    NUMBER_FIELDS = ("numproc", "cpuunits", "cpulimit")  # whole numbers, checked by the service

    def __init__(self, *args, plans=(), **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["template"].choices = [
            (t.name, f"{t.name} — {t.description}" if t.description else t.name)
            for t in OSTemplate.objects.filter(enabled=True).order_by("name")]
        self.fields["plan"].choices = [("", _("No plan (custom values)"))] + [(p.name, p.name) for p in plans]

    def service_kwargs(self) -> dict:
        """The keyword arguments for ``ve_create``: only the fields the user filled in.
        Sizes are parsed by services.validation, whose InvalidInput names the field."""
        data = self.cleaned_data
        out = {"template": data["template"], "hostname": data["hostname"] or None}
        if data.get("plan"):
            out["plan"] = data["plan"]
        for field in self.SIZE_FIELDS:
            if data.get(field):
                out[field] = parse_size(data[field], field=field, default_unit="M")
        for field in self.NUMBER_FIELDS:
            if data.get(field):
                out[field] = data[field]
        if data.get("root_password"):
            out["root_password"] = data["root_password"]
        return out

    def add_service_error(self, error) -> None:
        """Show a ServiceError next to the field it names (or above the form)."""
        self.add_error(error.field if error.field in self.fields else None, error.message)


class VEDestroyForm(forms.Form):
    """Destroying is irreversible: the user types the VE's hostname to confirm."""

    confirm = forms.CharField(label=_("Type the hostname to confirm"), max_length=253)

    def __init__(self, *args, hostname: str, **kwargs):
        super().__init__(*args, **kwargs)
        self.hostname = hostname

    def clean_confirm(self):
        value = self.cleaned_data["confirm"].strip()
        if value != self.hostname:
            raise forms.ValidationError(_("This is not the VE's hostname; nothing was destroyed."))
        return value
