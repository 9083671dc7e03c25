"""Forms of the browser panel. They only collect text: sizes, names and limits are parsed
and checked by the services (panel.services.validation), whose errors name the field they
belong to and are shown next to it."""
from __future__ import annotations

from django import forms
from django.utils.translation import gettext_lazy as _

from panel.models import OSTemplate
from panel.services.validation import human_size, parse_size


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

    addresses = forms.CharField(label=_("IP addresses"), max_length=3000, required=False,
                                help_text=_("Free addresses from the node's pools, separated by spaces. Empty: the "
                                            "next free ones (the plan's number, or one per address family)."))
    nameservers = forms.CharField(label=_("Nameservers"), max_length=200, required=False,
                                  help_text=_("Up to 3 DNS server addresses, separated by spaces."))
    searchdomain = forms.CharField(label=_("Search domains"), max_length=253, required=False,
                                   help_text=_("Domain names separated by spaces, e.g. example.com."))
    rate_in = forms.CharField(label=_("Bandwidth limit to the VE (bit/s)"), max_length=20, required=False,
                              help_text=_("For example 100M; 0 = unlimited. Empty: the plan's or unlimited."))
    rate_out = forms.CharField(label=_("Bandwidth limit from the VE (bit/s)"), max_length=20, required=False)
    # One request for a running VE (one job that creates and starts it), as customers expect
    # of "create"; unticked, the VE is created stopped, as with vzctl create.
    start = forms.BooleanField(label=_("Start the VE once it is created"), required=False, initial=True)

    SIZE_FIELDS = ("memory", "swap", "disk")          # text like 512M; a bare number is MiB
    NUMBER_FIELDS = ("numproc", "cpuunits", "cpulimit")  # whole numbers, checked by the service
    # Network settings: passed as typed, ve_create checks them (network_settings, allocate).
    NETWORK_FIELDS = ("nameservers", "searchdomain", "rate_in", "rate_out")

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
        if data.get("addresses", "").strip():
            out["addresses"] = data["addresses"].replace(",", " ").split()
        for field in self.NETWORK_FIELDS:
            if data.get(field, "").strip():
                out[field] = data[field].strip()
        if data.get("start"):
            out["start"] = True
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


# --- quotas --------------------------------------------------------------------------------

QUOTA_LABELS = {"max_ves": _("VEs"), "memory": _("Memory"), "disk": _("Disk"), "cpuunits": _("CPU units"),
                "addresses": _("Addresses"), "backups": _("Backups")}


class ServiceErrorsMixin:
    def add_service_error(self, error) -> None:
        """Show a ServiceError next to the field it names (or above the form)."""
        self.add_error(error.field if error.field in self.fields else None, error.message)


def _amount_fields(form, help_text) -> None:
    from panel.services.quotas import FIELDS

    for name in FIELDS:
        form.fields[name] = forms.CharField(label=QUOTA_LABELS[name], max_length=24, required=False,
                                            help_text=help_text)


def _filled_amounts(form) -> dict:
    from panel.services.quotas import FIELDS

    return {f: form.cleaned_data[f].strip() for f in FIELDS if form.cleaned_data.get(f, "").strip()}


class QuotaRequestForm(ServiceErrorsMixin, forms.Form):
    """Ask for higher limits: the new limit wanted for each quota to raise (blank: keep),
    and why. The amounts are parsed and checked by ``quota_request_create``."""

    reason = forms.CharField(label=_("Reason"), max_length=2000, widget=forms.Textarea(attrs={"rows": 3}))

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        reason = self.fields.pop("reason")
        _amount_fields(self, _("The new limit wanted; blank keeps the current one. Sizes like 8G."))
        self.fields["reason"] = reason

    def amounts(self) -> dict:
        return _filled_amounts(self)


class QuotaApproveForm(ServiceErrorsMixin, forms.Form):
    """Approve a quota request as asked, or with other amounts for some quotas."""

    version = forms.IntegerField(widget=forms.HiddenInput)
    reason = forms.CharField(label=_("Reason (optional)"), max_length=2000, required=False,
                             widget=forms.Textarea(attrs={"rows": 2}))

    def __init__(self, *args, request=None, **kwargs):
        if request is not None:  # one form per request on the queue page: ids must differ
            kwargs.setdefault("auto_id", f"id_{request.pk}_approve_%s")
        super().__init__(*args, **kwargs)
        self.request = request
        reason = self.fields.pop("reason")
        _amount_fields(self, _("Blank grants the requested amount."))
        self.fields["reason"] = reason
        if request is not None:
            self.fields["version"].initial = request.version

    def amounts(self) -> dict | None:
        """None: as asked; otherwise the requested amounts with the ones given replaced."""
        given = _filled_amounts(self)
        return {**self.request.amounts, **given} if given else None


class QuotaDenyForm(ServiceErrorsMixin, forms.Form):
    version = forms.IntegerField(widget=forms.HiddenInput)
    reason = forms.CharField(label=_("Reason"), max_length=2000, widget=forms.Textarea(attrs={"rows": 2}))

    def __init__(self, *args, request=None, **kwargs):
        if request is not None:
            kwargs.setdefault("auto_id", f"id_{request.pk}_deny_%s")
        super().__init__(*args, **kwargs)
        if request is not None:
            self.fields["version"].initial = request.version


class SuspendForm(ServiceErrorsMixin, forms.Form):
    """Suspend or lift a suspension (source: admin); suspending needs a reason."""

    reason = forms.CharField(label=_("Reason"), max_length=500, required=False)


class VESuspendForm(SuspendForm):
    """Suspend one VE, or lift its suspension, for a source staff choose; the service
    checks the reason (needed to suspend, optional to lift)."""

    by = forms.ChoiceField(label=_("Source"), initial="admin",
                           choices=[("admin", _("administrator")), ("abuse", _("abuse")), ("billing", _("billing"))])


class AuditFilterForm(forms.Form):
    """Filters of the audit log pages; dates are whole days in UTC, both included."""

    action = forms.CharField(label=_("Action"), max_length=64, required=False,
                             help_text=_("Exact, or a prefix ending in a dot such as ve."))
    since = forms.DateField(label=_("From"), required=False, widget=forms.DateInput(attrs={"type": "date"}))
    until = forms.DateField(label=_("To"), required=False, widget=forms.DateInput(attrs={"type": "date"}))

    def __init__(self, *args, staff: bool = False, **kwargs):
        super().__init__(*args, **kwargs)
        if staff:
            self.fields["tenant"] = forms.CharField(label=_("Tenant"), max_length=63, required=False)
            self.fields["actor"] = forms.CharField(label=_("User"), max_length=150, required=False)
            self.fields["result"] = forms.ChoiceField(label=_("Result"), required=False, choices=[
                ("", _("Any result")), ("ok", _("ok")), ("noop", _("no change")), ("denied", _("denied"))])

    def filters(self) -> dict:
        """Keyword arguments for ``selectors.audit_for`` (invalid fields are left out)."""
        from datetime import datetime, time, timedelta

        from django.utils import timezone

        self.is_valid()  # the fields that are valid still filter
        data = getattr(self, "cleaned_data", {})
        out = {}
        for key in ("action", "actor", "result"):
            if data.get(key):
                out[key] = data[key].replace("\x00", "")
        if data.get("tenant"):
            out["tenant"] = data["tenant"].replace("\x00", "")
        if data.get("since"):
            out["since"] = timezone.make_aware(datetime.combine(data["since"], time.min))
        if data.get("until"):
            out["until"] = timezone.make_aware(datetime.combine(data["until"] + timedelta(days=1), time.min))
        return out


# --- VE changes ----------------------------------------------------------------------------

class VEResourcesForm(ServiceErrorsMixin, forms.Form):
    """Change a running or stopped VE's resources (``ve_set``); blank fields stay as they
    are. Sizes like 512M (a bare number is MiB); the service checks ranges and quota."""

    memory = forms.CharField(label=_("Memory"), max_length=20, required=False,
                             help_text=_("For example 256M or 1G. Blank keeps the current value."))
    swap = forms.CharField(label=_("Swap"), max_length=20, required=False)
    disk = forms.CharField(label=_("Disk"), max_length=20, required=False,
                           help_text=_("Shrinking the disk needs the VE stopped."))
    cpuunits = forms.CharField(label=_("CPU weight (cpuunits)"), max_length=12, required=False)
    cpulimit = forms.CharField(label=_("CPU limit (percent of one core, 0 = none)"), max_length=12, required=False)
    numproc = forms.CharField(label=_("Process limit (NPROC)"), max_length=12, required=False)

    SIZE_FIELDS = ("memory", "swap", "disk")
    NUMBER_FIELDS = ("cpuunits", "cpulimit", "numproc")

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("auto_id", "id_res_%s")
        super().__init__(*args, **kwargs)

    def changes(self) -> dict:
        """The keyword arguments for ``ve_set``: only the fields filled in. Sizes are parsed
        by services.validation, whose InvalidInput names the field."""
        data, out = self.cleaned_data, {}
        for field in self.SIZE_FIELDS:
            if data.get(field, "").strip():
                out[field] = parse_size(data[field].strip(), field=field, default_unit="M")
        for field in self.NUMBER_FIELDS:
            if data.get(field, "").strip():
                out[field] = data[field].strip()
        return out


class VEPlanForm(ServiceErrorsMixin, forms.Form):
    """Move a VE to a plan (``ve_change_plan``)."""

    plan = forms.ChoiceField(label=_("Plan"))

    def __init__(self, *args, plans=(), **kwargs):
        kwargs.setdefault("auto_id", "id_plan_%s")
        super().__init__(*args, **kwargs)
        self.fields["plan"].choices = [(p.name, p.name) for p in plans]


class VEHostnameForm(ServiceErrorsMixin, forms.Form):
    """Set a VE's hostname (``ve_set``); the service checks it (RFC 1123)."""

    hostname = forms.CharField(label=_("Hostname"), max_length=253)

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("auto_id", "id_host_%s")
        super().__init__(*args, **kwargs)


class VEPasswordForm(ServiceErrorsMixin, forms.Form):
    """Set a VE's root password (``ve_set_password``): typed twice; the service checks it
    (length, no control characters) and hashes it. Not stripped: spaces may be part of it."""

    root_password = forms.CharField(label=_("New root password"), max_length=256, strip=False,
                                    widget=forms.PasswordInput(render_value=False,
                                                               attrs={"autocomplete": "new-password"}))
    root_password_confirm = forms.CharField(label=_("Repeat the new root password"), max_length=256, strip=False,
                                            widget=forms.PasswordInput(render_value=False,
                                                                       attrs={"autocomplete": "new-password"}))

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("auto_id", "id_pw_%s")
        super().__init__(*args, **kwargs)

    def clean(self):
        data = super().clean()
        if data.get("root_password") is not None and data.get("root_password_confirm") is not None \
                and data["root_password"] != data["root_password_confirm"]:
            self.add_error("root_password_confirm", _("The two passwords do not match."))
        return data


class _AddressFormMixin(ServiceErrorsMixin):
    def add_service_error(self, error) -> None:
        """The network services name their field ``addresses``: show it on ``address``."""
        self.add_error("address" if error.field == "addresses" else
                       error.field if error.field in self.fields else None, error.message)


class VEAddressAddForm(_AddressFormMixin, forms.Form):
    """Add an address to a VE (``ve_ipadd``): a chosen free one from the node's pools, or
    blank for the next free one of each address family. The service checks it."""

    address = forms.CharField(label=_("Address"), max_length=64, required=False,
                              help_text=_("A free address from the node's pools, e.g. 198.18.0.20. Blank: the "
                                          "next free one (IPv4 and IPv6 if the node has both)."))

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("auto_id", "id_ipadd_%s")
        super().__init__(*args, **kwargs)

    def addresses(self) -> list[str] | None:
        value = self.cleaned_data["address"].strip()
        return [value] if value else None


class VEAddressRemoveForm(_AddressFormMixin, forms.Form):
    """Remove one of a VE's addresses (``ve_ipdel``): the buttons next to each address."""

    address = forms.CharField(label=_("Address"), max_length=64)

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("auto_id", "id_ipdel_%s")
        super().__init__(*args, **kwargs)


# --- members -------------------------------------------------------------------------------

ROLE_CHOICES = [("owner", _("owner")), ("operator", _("operator")), ("viewer", _("viewer"))]


class MemberInviteForm(ServiceErrorsMixin, forms.Form):
    """Add a user to the tenant by e-mail: an existing account, or a new one that gets a
    mail to choose its password. The service checks the address."""

    email = forms.CharField(label=_("E-mail address"), max_length=254)
    role = forms.ChoiceField(label=_("Role"), choices=ROLE_CHOICES, initial="viewer")


class MemberRoleForm(ServiceErrorsMixin, forms.Form):
    """Change one member's role; ``member`` is the membership's id within the tenant."""

    member = forms.CharField(widget=forms.HiddenInput, max_length=20)
    role = forms.ChoiceField(label=_("Role"), choices=ROLE_CHOICES)


# --- staff: tenants ------------------------------------------------------------------------

class TenantCreateForm(ServiceErrorsMixin, forms.Form):
    """A new tenant and the e-mail address of its first owner (checked by ``tenant_create``)."""

    slug = forms.CharField(label=_("Slug"), max_length=63,
                           help_text=_("Lower-case letters, digits and hyphens; used in URLs and exports."))
    name = forms.CharField(label=_("Name"), max_length=200)
    owner_email = forms.CharField(label=_("First owner's e-mail address"), max_length=254)

    def add_service_error(self, error) -> None:
        field = "owner_email" if error.field == "email" else error.field
        self.add_error(field if field in self.fields else None, error.message)


class TenantQuotaForm(ServiceErrorsMixin, forms.Form):
    """A tenant's limits (``quota_set``): blank keeps a limit, "unlimited" lifts it."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        _amount_fields(self, _("Sizes like 8G; \"unlimited\" for no limit; blank keeps the current one."))

    def amounts(self) -> dict:
        return _filled_amounts(self)


# --- staff: plans, IP pools, OS templates ----------------------------------------------------

def _rate_text(bits: int) -> str:
    """A bandwidth in bits/s as services.validation.parse_rate reads it back (100M)."""
    for unit, factor in (("G", 10**9), ("M", 10**6), ("K", 10**3)):
        if bits >= factor and bits % factor == 0:
            return f"{bits // factor}{unit}"
    return str(bits)


class PlanForm(ServiceErrorsMixin, forms.Form):
    """A plan's values as text (``plan_create``/``plan_update`` parse and check them). When
    editing, ``plan`` fills in the current values and the name cannot change: billing
    systems know a plan by its name."""

    name = forms.CharField(label=_("Name"), max_length=63,
                           help_text=_("Lower-case letters, digits and hyphens; billing systems use it."))
    description = forms.CharField(label=_("Description"), max_length=200, required=False)
    memory = forms.CharField(label=_("Memory"), max_length=20, help_text=_("For example 512M or 2G."))
    swap = forms.CharField(label=_("Swap"), max_length=20, required=False, help_text=_("Blank: none."))
    disk = forms.CharField(label=_("Disk"), max_length=20, help_text=_("For example 10G."))
    cpuunits = forms.CharField(label=_("CPU weight (cpuunits)"), max_length=12, required=False,
                               help_text=_("Blank: 1000."))
    cpulimit = forms.CharField(label=_("CPU limit (percent of one core, 0 = none)"), max_length=12, required=False)
    numproc = forms.CharField(label=_("Process limit (NPROC)"), max_length=12, required=False,
                              help_text=_("Blank: 512."))
    addresses = forms.CharField(label=_("Addresses per VE"), max_length=4, required=False,
                                help_text=_("How many addresses a new VE on this plan gets. Blank: 1."))
    bandwidth = forms.CharField(label=_("Bandwidth each way"), max_length=20, required=False,
                                help_text=_("Bits per second, for example 100M; 0 or blank: unlimited."))
    enabled = forms.BooleanField(label=_("Offered to customers"), required=False, initial=True)

    VALUE_FIELDS = ("memory", "swap", "disk", "cpuunits", "cpulimit", "numproc", "addresses", "bandwidth")

    def __init__(self, *args, plan=None, **kwargs):
        if plan is not None:
            kwargs.setdefault("initial", {
                "description": plan.description, "memory": human_size(plan.memory), "swap": human_size(plan.swap),
                "disk": human_size(plan.disk), "cpuunits": plan.cpuunits, "cpulimit": plan.cpulimit,
                "numproc": plan.numproc, "addresses": plan.addresses, "bandwidth": _rate_text(plan.bandwidth),
                "enabled": plan.enabled})
        super().__init__(*args, **kwargs)
        self.plan = plan
        if plan is not None:
            del self.fields["name"]

    def values(self) -> dict:
        """Keyword arguments for the plan services: the fields filled in, the description
        (blank clears it) and whether the plan is offered."""
        data = self.cleaned_data
        out = {f: data[f].strip() for f in self.VALUE_FIELDS if data.get(f, "").strip()}
        out["description"] = data.get("description", "")
        out["enabled"] = bool(data.get("enabled"))
        return out


class PoolForm(ServiceErrorsMixin, forms.Form):
    """An IP pool: name, network (CIDR), an optional range inside it and the nodes that serve
    it (``pool_create``); editing (``pool``) changes the range and the nodes only."""

    name = forms.CharField(label=_("Name"), max_length=63,
                           help_text=_("Lower-case letters, digits and hyphens."))
    network = forms.CharField(label=_("Network (CIDR)"), max_length=64,
                              help_text=_("For example 198.18.0.0/24 or fd00:1::/64."))
    range_start = forms.CharField(label=_("First address handed out"), max_length=45, required=False,
                                  help_text=_("Blank: the first usable address of the network."))
    range_end = forms.CharField(label=_("Last address handed out"), max_length=45, required=False,
                                help_text=_("Blank: the last usable address of the network."))
    nodes = forms.MultipleChoiceField(label=_("Nodes serving the pool"), required=False,
                                      help_text=_("Their VEs take addresses from it; each gets the pool's "
                                                  "unreachable route."))

    def __init__(self, *args, pool=None, **kwargs):
        from panel.models import Node

        if pool is not None:
            kwargs.setdefault("initial", {"range_start": pool.range_start or "", "range_end": pool.range_end or "",
                                          "nodes": [n.name for n in pool.nodes.all()]})
        super().__init__(*args, **kwargs)
        self.pool = pool
        self.node_objects = {n.name: n for n in Node.objects.order_by("name")}
        self.fields["nodes"].choices = [(name, name) for name in self.node_objects]
        if pool is not None:
            del self.fields["name"], self.fields["network"]

    def chosen_nodes(self) -> list:
        return [self.node_objects[name] for name in self.cleaned_data.get("nodes", [])]


class TemplateNodeForm(ServiceErrorsMixin, forms.Form):
    """Build or remove an OS template on one node (``template_build``/``template_remove``)."""

    name = forms.ChoiceField(label=_("OS template"))
    node = forms.ChoiceField(label=_("Node"))

    def __init__(self, *args, names=(), prefix=None, **kwargs):
        from panel.models import Node

        super().__init__(*args, prefix=prefix, **kwargs)
        self.fields["name"].choices = [(n, n) for n in names]
        self.node_objects = {n.name: n for n in Node.objects.order_by("name")}
        self.fields["node"].choices = [(n, n) for n in self.node_objects]

    def chosen_node(self):
        return self.node_objects[self.cleaned_data["node"]]


class VEExecForm(ServiceErrorsMixin, forms.Form):
    """Run one command in a running VE (``ve_exec``). The line is split like a shell would
    split words (quotes group), but no shell runs it: it becomes an argv list."""

    command = forms.CharField(label=_("Command"), max_length=4096,
                              help_text=_("One command with its arguments, e.g. ps -ef. No shell: use sh -c '…' "
                                          "for pipes. Output is kept up to 64 KiB."))
    timeout = forms.IntegerField(label=_("Timeout (seconds)"), min_value=1, max_value=3600, initial=60)

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("auto_id", "id_exec_%s")
        super().__init__(*args, **kwargs)

    def clean_command(self):
        import shlex

        try:
            argv = shlex.split(self.cleaned_data["command"])
        except ValueError as e:
            raise forms.ValidationError(_("The command cannot be split into words: %(error)s") % {"error": e})
        if not argv:
            raise forms.ValidationError(_("Give a command to run."))
        return argv
