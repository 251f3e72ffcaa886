// presence-hub web directory and attendant console.
//
// Plain JavaScript, no build step, no third-party code: served by the hub itself, works offline.
// Views (hash routes): search "#/", detail "#/u/<id>", busy lamp field "#/lamps", the signed-in
// person's own status "#/me", the audit log "#/audit" (admins).
// Sign-in: a pasted API token (kept in localStorage, sent as a bearer token), or a session
// cookie from signing in with the organisation's identity provider (HttpOnly, so the page only
// learns of it from GET /api/me; its writes carry the session's CSRF token).
// Data: the JSON API for people and absences; one WebSocket (/api/stream) for live presence of
// whatever is on screen (search results, lamps, the open person), resumed by sequence number
// after a reconnect. Everything user-supplied is inserted as text, never as HTML.
'use strict';
(() => {

// ---- Text ---------------------------------------------------------------------------------
const T = {
  en: {
    'skip': 'Skip to search', 'nav.search': 'Search', 'nav.lamps': 'Lamps', 'signout': 'Sign out',
    'help.button': 'Keys', 'help.title': 'Keyboard', 'help.search': 'Search (type to search)',
    'help.move': 'Move in the results or lamps', 'help.enter': "Open the person's details",
    'help.esc': 'Back / clear the search', 'help.absence': 'Set an absence (operators)',
    'help.lamp': 'Add to or remove from my lamps', 'help.lamps': 'Busy lamp field', 'help.help': 'This help',
    'help.close': 'Close',
    'login.title': 'Sign in', 'login.token': 'Token', 'login.submit': 'Sign in',
    'login.intro': 'Sign in with an API token from your administrator. A viewer token shows presence; an operator token may also set absences.',
    'login.demo': 'This is the demo. Sign in as:', 'login.bad': 'The hub does not know this token.',
    'login.down': 'The hub does not answer. Try again in a moment.', 'login.expired': 'Your token is no longer accepted. Sign in again.',
    'search.label': 'Search people', 'search.placeholder': 'Name, department, title or number',
    'search.dept': 'Department', 'search.alldepts': 'All departments', 'search.results': 'Results',
    'search.more': 'Show more', 'search.count': '{n} people', 'search.count1': '1 person', 'search.none': 'Nobody matches.',
    'search.shown': 'showing {n}',
    'lamps.title': 'Busy lamp field', 'lamps.source': 'Show', 'lamps.mine': 'My lamps',
    'lamps.groups': 'Groups', 'lamps.depts': 'Departments',
    'lamps.empty': "No lamps yet. Add people with B in search or in a person's details.",
    'lamps.added': '{name} added to my lamps.', 'lamps.removed': '{name} removed from my lamps.',
    'conn.live': 'Live', 'conn.connecting': 'Connecting…', 'conn.down': 'Disconnected — reconnecting…', 'conn.idle': 'Not connected',
    'banner.down': 'Connection to the hub lost. Presence shown may be out of date; reconnecting…',
    'who': '{name} ({role})', 'role.viewer': 'viewer', 'role.self': 'colleague', 'role.operator': 'operator', 'role.admin': 'admin',
    'd.back': 'Back', 'd.why': 'Why', 'd.nosources': 'No source has reported anything yet.',
    'd.numbers': 'Numbers', 'd.absences': 'Absences', 'd.noabsences': 'No current or planned absences.',
    'd.setabsence': 'Set absence', 'd.addlamp': 'Add to my lamps', 'd.removelamp': 'Remove from my lamps',
    'd.again': 'Available again', 'd.note': 'Note', 'd.email': 'E-mail', 'd.sip': 'SIP', 'd.ext': 'Extension',
    'd.edit': 'Change', 'd.clear': 'Clear', 'd.now': 'now', 'd.planned': 'planned', 'd.by': 'set by {name}',
    'd.private': 'private', 'd.since': 'since {t}',
    'phone.mobile': 'Mobile', 'phone.work': 'Work', 'phone.home': 'Home', 'phone.other': 'Other',
    'src.teams': 'Teams', 'src.sfb': 'Skype for Business', 'src.sip': 'SIP', 'src.calendar': 'Calendar',
    'src.pbx': 'Phone', 'src.mobile': 'Mobile', 'src.manual': 'Absence',
    'src.part.absence': 'absence', 'src.part.routing': 'call routing', 'src.restored': 'before the restart',
    'fresh.live': 'current', 'fresh.stale': 'not current', 'fresh.unknown': 'unknown', 'fresh.pending': 'upcoming',
    'fresh.expired': 'ended',
    'age.s': '{n} s ago', 'age.m': '{n} min ago', 'age.h': '{h} h {m} min ago', 'age.d': '{n} d ago',
    'until': '{state} until {t}', 'back': '{state} — back {t}', 'ooo': 'Out of office', 'stale': 'not current', 'removed': 'No longer in the directory',
    'abs.title': 'Set absence — {name}', 'abs.titleEdit': 'Change absence — {name}',
    'abs.reason': 'Reason', 'abs.text': 'Note', 'abs.text.ph': 'e.g. Back 13:00, call the mobile',
    'abs.until': 'Until', 'abs.date': 'Date', 'abs.time': 'Time', 'abs.q30': '30 min', 'abs.q60': '1 hour',
    'abs.qeod': 'End of day', 'abs.qnone': 'Until further notice', 'abs.later': 'Starts later',
    'abs.sdate': 'Start date', 'abs.stime': 'Start time', 'abs.save': 'Save', 'abs.cancel': 'Cancel',
    'abs.tz': 'Times are in {tz}.', 'abs.open': 'until further notice', 'abs.saved': 'Absence saved for {name}.',
    'abs.cleared': 'Absence cleared for {name}.', 'abs.forbidden': 'Setting absences needs the operator role; you are signed in as {role}.',
    'abs.needtime': 'Give both a date and a time, or choose “Until further notice”.',
    'abs.range': '{a} – {b}', 'abs.from': 'from {t}',
    'err.generic': 'Something went wrong: {detail}', 'err.net': 'The hub does not answer.',
    'avail.Available': 'Available', 'avail.AvailableIdle': 'Available (idle)', 'avail.Busy': 'Busy',
    'avail.BusyIdle': 'Busy (idle)', 'avail.DoNotDisturb': 'Do not disturb', 'avail.BeRightBack': 'Be right back',
    'avail.Away': 'Away', 'avail.Offline': 'Offline', 'avail.Unknown': 'Unknown',
    'act.InACall': 'In a call', 'act.InAConferenceCall': 'In a conference call', 'act.Ringing': 'Ringing',
    'act.OnHold': 'Call on hold', 'act.InAMeeting': 'In a meeting', 'act.Presenting': 'Presenting',
    'act.UrgentInterruptionsOnly': 'Urgent interruptions only', 'act.OutOfOffice': 'Out of office',
    'act.OffWork': 'Off work', 'act.Inactive': 'Inactive', 'act.Tentative': 'Tentative',
    'act.WorkingElsewhere': 'Working elsewhere', 'act.Lunch': 'Lunch', 'act.Vacation': 'Vacation', 'act.Sick': 'Sick',
    'act.Course': 'Course', 'act.BusinessTrip': 'Business trip', 'act.ParentalLeave': 'Parental leave',
    'nav.me': 'My status', 'nav.audit': 'Audit log',
    'nodir': 'You are signed in but not in the directory, so you can look but not set a status.',
    'signin.intro': 'Sign in with your work account to see colleagues and set your own status.',
    'signin.with': 'Sign in with {name}', 'signin.or': 'or with an API token',
    'signin.error.denied': 'The sign-in was cancelled, or your account may not use this hub. Try again, or ask your administrator.',
    'signin.error.provider': 'The identity provider reported an error. Try again in a moment, or ask your administrator.',
    'signin.error.refused': 'The sign-in could not be verified, so it was refused. Try again.',
    'signin.error.expired': 'The sign-in took too long, or was started in another window. Try again.',
    'signin.error.unavailable': 'The identity provider cannot be reached right now. Try again in a moment.',
    'signin.error.other': 'The sign-in failed. Try again.',
    'login.ended': 'Your session has ended. Sign in again.', 'signout.failed': 'Could not sign out: {detail}',
    'abs.forbidden.self': "You may set only your own absences; an operator sets other people's.",
    'help.reasons': 'My status: pick a reason, then Enter sets it',
    'me.title': 'My status', 'me.set': 'Set my status', 'me.absences': 'My absences', 'me.why': 'What the switchboard sees',
    'me.choose': 'Choose a reason', 'me.setwhat': 'Set: {what}', 'me.more': 'More options…',
    'me.until': 'until {t}', 'me.askdate': 'pick a date',
    'me.askdate.hint': 'Choose the day you are away until (until {t} that day, unless you change the time).',
    'me.needdate': 'Choose a date, or tick “Until further notice”.', 'me.needtime': 'Give a time too.',
    'me.past': 'That time has already passed.', 'me.saved': 'Your status is set: {what}.',
    'me.noperson': 'My status is for people who sign in with their work account.',
    'audit.title': 'Audit log', 'audit.csv': 'Download CSV', 'audit.action': 'Action', 'audit.actor': 'Who',
    'audit.target': 'Target', 'audit.since': 'From', 'audit.until': 'To', 'audit.all': 'All actions',
    'audit.family.absence': 'All absence changes',
    'audit.exact': 'Exact name or id',
    'audit.col.at': 'Time', 'audit.col.actor': 'Who', 'audit.col.action': 'Action', 'audit.col.target': 'Target',
    'audit.col.detail': 'Details', 'audit.col.ip': 'Address',
    'audit.empty': 'No entries match.', 'audit.more': 'More', 'audit.count': '{n} entries shown', 'audit.count1': '1 entry shown',
    'audit.forbidden': 'The audit log is for administrators; you are signed in as {role}.',
    'audit.csvfailed': 'Could not download the CSV: {detail}',
    'audit.action.absence.created': 'Absence set', 'audit.action.absence.changed': 'Absence changed',
    'audit.action.absence.cleared': 'Absence cleared', 'audit.action.signin': 'Signed in',
    'audit.action.signin.failed': 'Sign-in failed', 'audit.action.signout': 'Signed out',
    'audit.action.session.revoked': 'Session ended by an admin', 'audit.action.token.refused': 'Token refused',
    'audit.action.csrf.refused': 'Request refused (CSRF)', 'audit.action.directory.sync': 'Directory sync',
    'audit.action.provider.restarted': 'Source restarted', 'audit.action.signals.pushed': 'Signals pushed',
    'audit.action.config.reloaded': 'Configuration reloaded', 'audit.d.applied': 'in force: {list}',
    'audit.d.restart': 'after a restart: {list}', 'audit.d.refused': 'refused: {why}',
    'audit.d.pushed': '{requests} requests, {signals} signals in the minute from {t}',
    'audit.via.token': 'token', 'audit.via.oidc': 'signed in',
    'audit.d.until': 'until {t}', 'audit.d.from': 'from {t}', 'audit.d.notindir': 'not in the directory',
    'audit.d.claims': 'roles from the provider: {list}', 'audit.d.sync': '{kind} sync: {sources}',
    'audit.d.sync.full': 'Full', 'audit.d.sync.incremental': 'Incremental', 'audit.d.force': 'forced',
    'audit.d.suppressed': '{n} earlier refusals not written', 'audit.d.session': 'session {id}',
    'audit.failed.denied': 'cancelled or not allowed', 'audit.failed.provider': 'error at the provider',
    'audit.failed.refused': 'not verified', 'audit.failed.expired': 'took too long',
    'audit.failed.unavailable': 'provider unreachable',
    'sess.title': 'Signed-in sessions', 'sess.col.who': 'Who', 'sess.col.role': 'Role', 'sess.col.since': 'Signed in',
    'sess.col.seen': 'Last seen', 'sess.col.ends': 'Ends', 'sess.col.act': 'End the session', 'sess.revoke': 'End',
    'sess.revokeof': 'End the session of {name}', 'sess.revoked': 'The session of {name} has ended.',
    'sess.empty': 'Nobody is signed in with the identity provider.', 'sess.you': 'you',
    'lang.other': 'Svenska',
  },
  sv: {
    'skip': 'Hoppa till sök', 'nav.search': 'Sök', 'nav.lamps': 'Lampor', 'signout': 'Logga ut',
    'help.button': 'Tangenter', 'help.title': 'Tangentbord', 'help.search': 'Sök (skriv för att söka)',
    'help.move': 'Flytta i träfflistan eller lamporna', 'help.enter': 'Öppna personens detaljer',
    'help.esc': 'Tillbaka / töm sökningen', 'help.absence': 'Lägg in frånvaro (operatörer)',
    'help.lamp': 'Lägg till i eller ta bort från mina lampor', 'help.lamps': 'Lampfält', 'help.help': 'Den här hjälpen',
    'help.close': 'Stäng',
    'login.title': 'Logga in', 'login.token': 'Token', 'login.submit': 'Logga in',
    'login.intro': 'Logga in med en API-token från din administratör. En läs-token visar närvaro; en operatörs-token får också lägga in frånvaro.',
    'login.demo': 'Det här är demon. Logga in som:', 'login.bad': 'Hubben känner inte till den här token.',
    'login.down': 'Hubben svarar inte. Försök igen om en stund.', 'login.expired': 'Din token godtas inte längre. Logga in igen.',
    'search.label': 'Sök personer', 'search.placeholder': 'Namn, avdelning, titel eller nummer',
    'search.dept': 'Avdelning', 'search.alldepts': 'Alla avdelningar', 'search.results': 'Träffar',
    'search.more': 'Visa fler', 'search.count': '{n} personer', 'search.count1': '1 person', 'search.none': 'Ingen matchar.',
    'search.shown': 'visar {n}',
    'lamps.title': 'Lampfält', 'lamps.source': 'Visa', 'lamps.mine': 'Mina lampor',
    'lamps.groups': 'Grupper', 'lamps.depts': 'Avdelningar',
    'lamps.empty': 'Inga lampor än. Lägg till personer med B i sökningen eller i en persons detaljer.',
    'lamps.added': '{name} lades till i mina lampor.', 'lamps.removed': '{name} togs bort från mina lampor.',
    'conn.live': 'Ansluten', 'conn.connecting': 'Ansluter…', 'conn.down': 'Frånkopplad — återansluter…', 'conn.idle': 'Inte ansluten',
    'banner.down': 'Anslutningen till hubben bröts. Visad närvaro kan vara inaktuell; återansluter…',
    'who': '{name} ({role})', 'role.viewer': 'läsare', 'role.self': 'medarbetare', 'role.operator': 'operatör', 'role.admin': 'administratör',
    'd.back': 'Tillbaka', 'd.why': 'Varför', 'd.nosources': 'Ingen källa har rapporterat något än.',
    'd.numbers': 'Nummer', 'd.absences': 'Frånvaro', 'd.noabsences': 'Ingen aktuell eller planerad frånvaro.',
    'd.setabsence': 'Lägg in frånvaro', 'd.addlamp': 'Lägg till i mina lampor', 'd.removelamp': 'Ta bort från mina lampor',
    'd.again': 'Tillgänglig igen', 'd.note': 'Notering', 'd.email': 'E-post', 'd.sip': 'SIP', 'd.ext': 'Anknytning',
    'd.edit': 'Ändra', 'd.clear': 'Ta bort', 'd.now': 'nu', 'd.planned': 'planerad', 'd.by': 'inlagd av {name}',
    'd.private': 'privat', 'd.since': 'sedan {t}',
    'phone.mobile': 'Mobil', 'phone.work': 'Arbete', 'phone.home': 'Hem', 'phone.other': 'Annat',
    'src.teams': 'Teams', 'src.sfb': 'Skype för företag', 'src.sip': 'SIP', 'src.calendar': 'Kalender',
    'src.pbx': 'Telefon', 'src.mobile': 'Mobil', 'src.manual': 'Frånvaro',
    'src.part.absence': 'frånvaro', 'src.part.routing': 'samtalsstyrning', 'src.restored': 'före omstarten',
    'fresh.live': 'aktuell', 'fresh.stale': 'inaktuell', 'fresh.unknown': 'okänd', 'fresh.pending': 'kommande',
    'fresh.expired': 'avslutad',
    'age.s': 'för {n} s sedan', 'age.m': 'för {n} min sedan', 'age.h': 'för {h} h {m} min sedan', 'age.d': 'för {n} d sedan',
    'until': '{state} till {t}', 'back': '{state} — tillbaka {t}', 'ooo': 'Inte på kontoret', 'stale': 'inaktuell', 'removed': 'Finns inte längre i katalogen',
    'abs.title': 'Lägg in frånvaro — {name}', 'abs.titleEdit': 'Ändra frånvaro — {name}',
    'abs.reason': 'Orsak', 'abs.text': 'Notering', 'abs.text.ph': 't.ex. Tillbaka 13:00, ring mobilen',
    'abs.until': 'Till', 'abs.date': 'Datum', 'abs.time': 'Tid', 'abs.q30': '30 min', 'abs.q60': '1 timme',
    'abs.qeod': 'Dagens slut', 'abs.qnone': 'Tills vidare', 'abs.later': 'Börjar senare',
    'abs.sdate': 'Startdatum', 'abs.stime': 'Starttid', 'abs.save': 'Spara', 'abs.cancel': 'Avbryt',
    'abs.tz': 'Tider anges i {tz}.', 'abs.open': 'tills vidare', 'abs.saved': 'Frånvaron sparades för {name}.',
    'abs.cleared': 'Frånvaron togs bort för {name}.', 'abs.forbidden': 'Att lägga in frånvaro kräver operatörsrollen; du är inloggad som {role}.',
    'abs.needtime': 'Ange både datum och tid, eller välj ”Tills vidare”.',
    'abs.range': '{a} – {b}', 'abs.from': 'från {t}',
    'err.generic': 'Något gick fel: {detail}', 'err.net': 'Hubben svarar inte.',
    'avail.Available': 'Tillgänglig', 'avail.AvailableIdle': 'Tillgänglig (inaktiv)', 'avail.Busy': 'Upptagen',
    'avail.BusyIdle': 'Upptagen (inaktiv)', 'avail.DoNotDisturb': 'Stör ej', 'avail.BeRightBack': 'Strax tillbaka',
    'avail.Away': 'Borta', 'avail.Offline': 'Offline', 'avail.Unknown': 'Okänd',
    'act.InACall': 'I samtal', 'act.InAConferenceCall': 'I konferenssamtal', 'act.Ringing': 'Ringer',
    'act.OnHold': 'Samtal parkerat', 'act.InAMeeting': 'I möte', 'act.Presenting': 'Presenterar',
    'act.UrgentInterruptionsOnly': 'Endast brådskande', 'act.OutOfOffice': 'Inte på kontoret',
    'act.OffWork': 'Ledig', 'act.Inactive': 'Inaktiv', 'act.Tentative': 'Preliminärt',
    'act.WorkingElsewhere': 'Arbetar på annan plats', 'act.Lunch': 'Lunch', 'act.Vacation': 'Semester', 'act.Sick': 'Sjuk',
    'act.Course': 'Kurs', 'act.BusinessTrip': 'Tjänsteresa', 'act.ParentalLeave': 'Föräldraledig',
    'nav.me': 'Min status', 'nav.audit': 'Granskningslogg',
    'nodir': 'Du är inloggad men finns inte i katalogen, så du kan titta men inte sätta någon status.',
    'signin.intro': 'Logga in med ditt jobbkonto för att se kollegor och sätta din egen status.',
    'signin.with': 'Logga in med {name}', 'signin.or': 'eller med en API-token',
    'signin.error.denied': 'Inloggningen avbröts, eller så får ditt konto inte använda hubben. Försök igen eller fråga din administratör.',
    'signin.error.provider': 'Identitetsleverantören rapporterade ett fel. Försök igen om en stund eller fråga din administratör.',
    'signin.error.refused': 'Inloggningen kunde inte verifieras och nekades. Försök igen.',
    'signin.error.expired': 'Inloggningen tog för lång tid eller påbörjades i ett annat fönster. Försök igen.',
    'signin.error.unavailable': 'Identitetsleverantören går inte att nå just nu. Försök igen om en stund.',
    'signin.error.other': 'Inloggningen misslyckades. Försök igen.',
    'login.ended': 'Din session har upphört. Logga in igen.', 'signout.failed': 'Kunde inte logga ut: {detail}',
    'abs.forbidden.self': 'Du får bara lägga in din egen frånvaro; en operatör lägger in andras.',
    'help.reasons': 'Min status: välj en orsak, Enter sätter den',
    'me.title': 'Min status', 'me.set': 'Sätt min status', 'me.absences': 'Min frånvaro', 'me.why': 'Det här ser växeln',
    'me.choose': 'Välj en orsak', 'me.setwhat': 'Sätt: {what}', 'me.more': 'Fler val…',
    'me.until': 'till {t}', 'me.askdate': 'välj datum',
    'me.askdate.hint': 'Välj dagen du är borta till (till {t} den dagen, om du inte ändrar tiden).',
    'me.needdate': 'Välj ett datum, eller kryssa i ”Tills vidare”.', 'me.needtime': 'Ange en tid också.',
    'me.past': 'Den tiden har redan passerat.', 'me.saved': 'Din status är satt: {what}.',
    'me.noperson': 'Min status är för den som loggar in med sitt jobbkonto.',
    'audit.title': 'Granskningslogg', 'audit.csv': 'Ladda ner CSV', 'audit.action': 'Händelse', 'audit.actor': 'Vem',
    'audit.target': 'Gäller', 'audit.since': 'Från', 'audit.until': 'Till', 'audit.all': 'Alla händelser',
    'audit.family.absence': 'All ändrad frånvaro',
    'audit.exact': 'Exakt namn eller id',
    'audit.col.at': 'Tid', 'audit.col.actor': 'Vem', 'audit.col.action': 'Händelse', 'audit.col.target': 'Gäller',
    'audit.col.detail': 'Detaljer', 'audit.col.ip': 'Adress',
    'audit.empty': 'Inga poster matchar.', 'audit.more': 'Fler', 'audit.count': '{n} poster visas', 'audit.count1': '1 post visas',
    'audit.forbidden': 'Granskningsloggen är för administratörer; du är inloggad som {role}.',
    'audit.csvfailed': 'Kunde inte ladda ner CSV-filen: {detail}',
    'audit.action.absence.created': 'Frånvaro inlagd', 'audit.action.absence.changed': 'Frånvaro ändrad',
    'audit.action.absence.cleared': 'Frånvaro borttagen', 'audit.action.signin': 'Inloggning',
    'audit.action.signin.failed': 'Misslyckad inloggning', 'audit.action.signout': 'Utloggning',
    'audit.action.session.revoked': 'Session avslutad av en administratör', 'audit.action.token.refused': 'Token nekad',
    'audit.action.csrf.refused': 'Begäran nekad (CSRF)', 'audit.action.directory.sync': 'Katalogsynk',
    'audit.action.provider.restarted': 'Källa omstartad', 'audit.action.signals.pushed': 'Signaler inskickade',
    'audit.action.config.reloaded': 'Konfiguration omläst', 'audit.d.applied': 'gäller nu: {list}',
    'audit.d.restart': 'efter omstart: {list}', 'audit.d.refused': 'nekad: {why}',
    'audit.d.pushed': '{requests} anrop, {signals} signaler under minuten från {t}',
    'audit.via.token': 'token', 'audit.via.oidc': 'inloggad',
    'audit.d.until': 'till {t}', 'audit.d.from': 'från {t}', 'audit.d.notindir': 'finns inte i katalogen',
    'audit.d.claims': 'roller från leverantören: {list}', 'audit.d.sync': '{kind} synk: {sources}',
    'audit.d.sync.full': 'Full', 'audit.d.sync.incremental': 'Inkrementell', 'audit.d.force': 'tvingad',
    'audit.d.suppressed': '{n} tidigare nekanden skrevs inte', 'audit.d.session': 'session {id}',
    'audit.failed.denied': 'avbruten eller inte tillåten', 'audit.failed.provider': 'fel hos leverantören',
    'audit.failed.refused': 'kunde inte verifieras', 'audit.failed.expired': 'tog för lång tid',
    'audit.failed.unavailable': 'leverantören nåddes inte',
    'sess.title': 'Inloggade sessioner', 'sess.col.who': 'Vem', 'sess.col.role': 'Roll', 'sess.col.since': 'Inloggad',
    'sess.col.seen': 'Senast aktiv', 'sess.col.ends': 'Upphör', 'sess.col.act': 'Avsluta sessionen', 'sess.revoke': 'Avsluta',
    'sess.revokeof': 'Avsluta sessionen för {name}', 'sess.revoked': 'Sessionen för {name} är avslutad.',
    'sess.empty': 'Ingen är inloggad via identitetsleverantören.', 'sess.you': 'du',
    'lang.other': 'English',
  },
};
const CALLS = new Set(['InACall', 'InAConferenceCall', 'Ringing', 'OnHold']);
const MEETINGS = new Set(['InAMeeting', 'Presenting']);

// ---- State --------------------------------------------------------------------------------
const store = {
  get: (k, d) => { try { const v = localStorage.getItem('ph.' + k); return v === null ? d : JSON.parse(v); } catch { return d; } },
  set: (k, v) => { try { localStorage.setItem('ph.' + k, JSON.stringify(v)); } catch { /* private mode */ } },
  del: (k) => { try { localStorage.removeItem('ph.' + k); } catch { /* private mode */ } },
};
const S = {
  ui: { title: 'presence-hub', time_zone: undefined, language: 'auto', demo: false, demo_tokens: [], heartbeat_secs: 15, oidc: null },
  token: store.get('token', null),
  me: null,             // GET /api/me: who is signed in (by token, or by the session cookie)
  signinError: null,    // ?signin_error=<code> the identity provider's flow came back with
  lang: 'en',
  reasons: [], depts: [], groups: [],
  people: new Map(),    // id → person summary (name, department, title, phones…)
  presence: new Map(),  // id → merged presence from the stream (or a search answer until then)
  results: [], total: 0, active: -1, searchGen: 0, searched: false,
  lamps: store.get('lamps', []),
  lampSource: store.get('lampSource', 'mine'),
  lampIds: [],
  detail: null, detailId: null, detailAt: 0, detailKey: '', listsLoaded: false,
  view: null, backTo: '#/',
};

// ---- Helpers ------------------------------------------------------------------------------
const $ = (s) => document.querySelector(s);
const NS = 'http://www.w3.org/2000/svg';
function h(tag, props, ...kids) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(props || {})) {
    if (v == null || v === false) continue;
    if (k === 'class') e.className = v;
    else if (k === 'text') e.textContent = v;
    else if (k.startsWith('on')) e.addEventListener(k.slice(2), v);
    else e.setAttribute(k, v === true ? '' : v);
  }
  for (const c of kids.flat()) if (c != null && c !== false) e.append(c instanceof Node ? c : String(c));
  return e;
}
function icon(name) {
  const s = document.createElementNS(NS, 'svg');
  s.setAttribute('class', 'ic');
  s.setAttribute('aria-hidden', 'true');
  const u = document.createElementNS(NS, 'use');
  u.setAttribute('href', '#i-' + name);
  s.append(u);
  return s;
}
/// Text for `key` in the page's language. A missing text is a bug, but never shows the key:
/// the page falls back to the English text, or else to the key's last part in words
/// ("fresh.pending" → "pending", "avail.BeRightBack" → "Be right back"). Each miss is recorded
/// once in `window.__missingKeys` ("sv:fresh.pending") with a console warning, for the tests.
const missing = new Set();
window.__missingKeys = [];
function has(key) { return Object.hasOwn(T.en, key); }
function t(key, vars) {
  let s = Object.hasOwn(T[S.lang], key) ? T[S.lang][key] : undefined;
  if (s === undefined) {
    const id = S.lang + ':' + key;
    if (!missing.has(id)) { missing.add(id); window.__missingKeys.push(id); console.warn('presence-hub: no text for', id); }
    s = has(key) ? T.en[key] : humane(key);
  }
  if (vars) s = s.replace(/\{(\w+)\}/g, (_, k) => (vars[k] ?? ''));
  return s;
}
/// The last part of a key in words: "fresh.pending" → "pending", "act.OnHold" → "On hold".
function humane(key) {
  const w = String(key).slice(String(key).lastIndexOf('.') + 1).replace(/_/g, ' ').replace(/([a-z])([A-Z])/g, '$1 $2');
  return w.charAt(0) + w.slice(1).toLowerCase();
}
let toastTimer = 0;
function toast(msg) {
  const el = $('#toast');
  el.textContent = msg;
  el.hidden = false;
  clearTimeout(toastTimer);
  toastTimer = setTimeout(() => { el.hidden = true; }, 5000);
}
const inField = (e) => { const tg = e.target; return tg && (tg.isContentEditable || /^(INPUT|SELECT|TEXTAREA)$/.test(tg.tagName)); };

// ---- Time (always in the hub's time zone) --------------------------------------------------
const fmtCache = new Map();
function fmt(opts) {
  const key = S.lang + JSON.stringify(opts);
  let f = fmtCache.get(key);
  if (!f) {
    f = new Intl.DateTimeFormat(S.lang === 'sv' ? 'sv-SE' : 'en-GB', { timeZone: S.ui.time_zone, ...opts });
    fmtCache.set(key, f);
  }
  return f;
}
function parts(ms) {
  const o = {};
  for (const p of fmt({ year: 'numeric', month: '2-digit', day: '2-digit', hour: '2-digit', minute: '2-digit', second: '2-digit', hourCycle: 'h23' }).formatToParts(new Date(ms))) {
    if (p.type !== 'literal') o[p.type] = +p.value;
  }
  return o;
}
const dayKey = (ms) => { const p = parts(ms); return p.year * 10000 + p.month * 100 + p.day; };
function clock(ms) { return fmt({ hour: '2-digit', minute: '2-digit', hourCycle: 'h23' }).format(new Date(ms)); }
/// "13:00" today, "Mon 13:00" within a week, "2 Dec 13:00" later, with the year if not this one.
function when(ms) {
  const now = Date.now();
  if (dayKey(ms) === dayKey(now)) return clock(ms);
  const days = (ms - now) / 86400000;
  if (days > -6 && days < 6) return fmt({ weekday: 'short' }).format(new Date(ms)) + ' ' + clock(ms);
  const sameYear = parts(ms).year === parts(now).year;
  return fmt(sameYear ? { day: 'numeric', month: 'short' } : { day: 'numeric', month: 'short', year: 'numeric' }).format(new Date(ms)) + ' ' + clock(ms);
}
function age(sec) {
  sec = Math.max(0, Math.round(sec));
  if (sec < 60) return t('age.s', { n: sec });
  if (sec < 3600) return t('age.m', { n: Math.floor(sec / 60) });
  if (sec < 86400) return t('age.h', { h: Math.floor(sec / 3600), m: Math.floor((sec % 3600) / 60) });
  return t('age.d', { n: Math.floor(sec / 86400) });
}
/// Milliseconds since the epoch of a wall-clock date ("2026-11-24") and time ("13:00") in the hub's zone.
function wallToMs(date, time) {
  const [y, mo, d] = date.split('-').map(Number);
  const [hh, mi] = time.split(':').map(Number);
  const guess = Date.UTC(y, mo - 1, d, hh, mi);
  const offset = (ms) => { const p = parts(ms); return Date.UTC(p.year, p.month - 1, p.day, p.hour, p.minute, p.second) - Math.floor(ms / 1000) * 1000; };
  let ms = guess - offset(guess);
  const o2 = offset(ms);
  if (guess - o2 !== ms) ms = guess - o2;
  return ms;
}
const pad = (n) => String(n).padStart(2, '0');
function wallDate(ms) { const p = parts(ms); return `${p.year}-${pad(p.month)}-${pad(p.day)}`; }
function wallTime(ms) { const p = parts(ms); return `${pad(p.hour)}:${pad(p.minute)}`; }

// ---- Presence in words ----------------------------------------------------------------------
function reasonLabel(code) {
  const r = S.reasons.find((x) => x.code === code);
  return r ? (S.lang === 'sv' ? r.label_sv : r.label_en) : null;
}
const avClass = (a) => ({ Available: 'ok', AvailableIdle: 'ok', Busy: 'busy', BusyIdle: 'busy', DoNotDisturb: 'dnd',
  BeRightBack: 'away', Away: 'away', Offline: 'off' }[a] || 'unk');
/// An activity in words; one the page does not know is a source's own free text, shown as reported.
function actWord(a) { return a ? (has('act.' + a) ? t('act.' + a) : a) : null; }
/// {cls, icon, text, note, stale} describing a merged presence for people.
function describe(p) {
  if (p && p.removed) return { cls: 'unk', icon: 'unk', text: t('removed'), note: null, stale: false };
  if (!p || p.availability === 'Unknown' || p.freshness === 'unknown') {
    return { cls: 'unk', icon: 'unk', text: t('avail.Unknown'), note: p?.note || null, stale: false };
  }
  const cls = avClass(p.availability);
  const act = p.activity;
  const call = act && CALLS.has(act);
  let ic = { ok: 'ok', busy: 'busy', dnd: 'dnd', away: 'away', off: 'off' }[cls];
  if (call) ic = act === 'Ringing' ? 'ring' : 'phone';
  else if (act && MEETINGS.has(act)) ic = 'meet';
  let state;
  if (call) state = actWord(act);
  else if (p.absence_reason && reasonLabel(p.absence_reason)) state = reasonLabel(p.absence_reason);
  else if (act && act !== 'Tentative' && act !== 'WorkingElsewhere') state = actWord(act);
  else state = t('avail.' + p.availability);
  let text = state;
  const again = p.available_again_at ? Date.parse(p.available_again_at) : null;
  if (again && again > Date.now() && !call) {
    const isAbsence = p.absence_reason || cls === 'away' || cls === 'off';
    text = t(isAbsence ? 'back' : 'until', { state, t: when(again) });
  }
  if (p.ooo && act !== 'OutOfOffice' && !/^(Vacation|Sick)$/.test(act || '')) text += ' · ' + t('ooo');
  const stale = p.freshness === 'stale';
  return { cls, icon: ic, text, note: p.note || null, stale };
}
function stateNode(p, tag = 'span') {
  const d = describe(p);
  const el = h(tag, { class: `state s-${d.cls}${d.stale ? ' stale' : ''}` }, icon(d.icon), h('span', { class: 'words', text: d.text }));
  if (d.stale) el.append(h('span', { class: 'tag', text: t('stale') }));
  return el;
}

// ---- API --------------------------------------------------------------------------------------
class ApiError extends Error {
  constructor(status, body) { super(body?.detail || body?.error || ('HTTP ' + status)); this.status = status; this.body = body; }
}
/// Signed in with the identity provider: the session cookie authenticates (no token).
const bySession = () => !S.token && !!S.me;
/// A JSON API call. With a token it goes as a bearer token; otherwise the session cookie goes
/// along (same origin) and every write carries the session's CSRF token. A write refused for
/// its CSRF token (the session's token changed, or this page's copy is old) is retried once
/// after fetching /api/me again. `opts.login`: a sign-in probe, which a 401 does not sign out.
async function api(path, opts = {}) {
  const method = opts.method || 'GET';
  const headers = { Accept: 'application/json' };
  if (S.token) headers.Authorization = 'Bearer ' + S.token;
  else if (method !== 'GET' && S.me?.csrf_token) headers['X-CSRF-Token'] = S.me.csrf_token;
  if (opts.body !== undefined) headers['Content-Type'] = 'application/json';
  let res;
  try {
    res = await fetch(path, { method, headers, body: opts.body === undefined ? undefined : JSON.stringify(opts.body), cache: 'no-store', credentials: 'same-origin' });
  } catch (e) {
    throw new ApiError(0, { error: 'network', detail: t('err.net') });
  }
  if (res.status === 204) return null;
  let body = null;
  try { body = await res.json(); } catch { /* empty or not JSON */ }
  if (!res.ok) {
    if (res.status === 403 && body?.error === 'csrf' && bySession() && !opts.retried) {
      let me = null;
      try { me = await api('/api/me', { login: true }); } catch (e) { if (e.status === 401) { signOut(t('login.ended')); throw e; } }
      if (me && !S.token) { S.me = me; return api(path, { ...opts, retried: true }); }
    }
    if (res.status === 401 && !opts.login) {
      if (S.token) signOut(t('login.expired'));
      else if (S.me) signOut(t('login.ended'));
    }
    throw new ApiError(res.status, body);
  }
  return body;
}
function remember(list) {
  for (const p of list) {
    S.people.set(p.id, p);
    if (p.presence && !S.presence.has(p.id)) S.presence.set(p.id, p.presence);
  }
}

// ---- Live stream --------------------------------------------------------------------------------
const live = {
  ws: null, seq: null, filterKey: '', connected: false, attempts: 0, timer: 0, watchdog: 0, lastFrame: 0,
  users: [], departments: [],
  start() { this.stop(); this.open(); },
  stop() {
    clearTimeout(this.timer);
    clearInterval(this.watchdog);
    if (this.ws) { this.ws.onclose = null; this.ws.close(); this.ws = null; }
    this.connected = false;
  },
  open() {
    if (!S.token && !S.me) return;
    setConn(this.attempts ? 'down' : 'connecting');
    const proto = location.protocol === 'https:' ? 'wss:' : 'ws:';
    // A token goes in the URL (a WebSocket cannot carry headers); a session's cookie goes by
    // itself, so its URL carries nothing.
    const auth = S.token ? `?access_token=${encodeURIComponent(S.token)}` : '';
    const ws = new WebSocket(`${proto}//${location.host}/api/stream${auth}`);
    this.ws = ws;
    ws.onopen = () => {
      this.connected = true;
      this.lastFrame = Date.now();
      this.send(true);
      setConn('live');
      clearInterval(this.watchdog);
      // The hub sends a heartbeat when idle; three missed ones mean a dead connection.
      this.watchdog = setInterval(() => {
        if (Date.now() - this.lastFrame > (S.ui.heartbeat_secs || 15) * 3000) ws.close();
      }, 1000);
      if (this.attempts) { this.attempts = 0; onReconnected(); }
    };
    ws.onmessage = (e) => { this.lastFrame = Date.now(); let f; try { f = JSON.parse(e.data); } catch { return; } this.frame(f); };
    ws.onclose = (e) => {
      clearInterval(this.watchdog);
      this.ws = null;
      this.connected = false;
      this.attempts++;
      setConn('down');
      // The hub closes a stream whose sign-in session ended (1008): find out at once.
      if (e.code === 1008) api('/api/me').catch(() => {});
      // Back off 0.25 s, 0.5 s, 1 s … 5 s, with jitter; check the token now and then.
      const delay = Math.min(5000, 250 * 2 ** Math.min(this.attempts - 1, 5)) * (0.75 + Math.random() / 2);
      this.timer = setTimeout(() => {
        if (!S.token && !S.me) return; // signed out meanwhile
        if (this.attempts % 4 === 3) api('/api/me').catch(() => {});
        this.open();
      }, delay);
    };
  },
  /// Watch these people and departments. A new filter gets a fresh snapshot; the same one
  /// after a reconnect resumes from the last sequence number.
  watch(users, departments) {
    const u = [...new Set(users)].slice(0, 5000);
    const d = [...new Set(departments)].slice(0, 200);
    const key = JSON.stringify([u, d]);
    if (key === this.filterKey) return;
    this.filterKey = key;
    this.users = u;
    this.departments = d;
    this.seq = null;
    this.send(false);
  },
  send(resume) {
    if (!this.ws || this.ws.readyState !== 1) return;
    const msg = { op: 'subscribe', all: false, users: this.users, departments: this.departments };
    if (resume && this.seq != null) msg.since = this.seq;
    this.ws.send(JSON.stringify(msg));
  },
  frame(f) {
    switch (f.type) {
      case 'snapshot':
        for (const p of f.presence) S.presence.set(p.id, p);
        if (f.last) this.seq = f.seq;
        for (const p of f.presence) changed(p.id);
        break;
      case 'delta':
        S.presence.set(f.presence.id, f.presence);
        this.seq = f.seq;
        changed(f.presence.id);
        break;
      case 'removed':
        // Directory sync took the person out: say so where they are shown (never call them).
        S.presence.set(f.presence.id, { id: f.presence.id, removed: true });
        this.seq = f.seq;
        changed(f.presence.id);
        break;
      case 'resumed': case 'heartbeat':
        this.seq = f.seq;
        break;
      case 'error':
        console.warn('stream:', f.detail || f.error);
        break;
      default:
        break;
    }
  },
};
function setConn(state) {
  const el = $('#conn');
  el.dataset.state = state;
  el.textContent = t('conn.' + state);
  const banner = $('#banner');
  banner.hidden = state !== 'down';
  banner.textContent = t('banner.down');
  document.body.classList.toggle('offline', state === 'down');
}
function onReconnected() {
  if (S.view === 'detail' && S.detailId) loadDetail(S.detailId, true);
  if (S.view === 'me') loadMe(true);
}
/// The people on screen; called whenever the view or its list changes.
function rewatch() {
  const users = [];
  const depts = [];
  if (S.view === 'search') users.push(...S.results.map((p) => p.id));
  if (S.view === 'detail' && S.detail && S.detail.id === S.detailId) users.push(S.detailId);
  if (S.view === 'lamps') {
    if (S.lampSource.startsWith('dept:')) depts.push(S.lampSource.slice(5));
    else users.push(...S.lampIds);
  }
  if (S.view === 'me' && meId()) users.push(meId());
  live.watch(users, depts);
}
/// A person's presence changed: repaint where they appear.
function changed(id) {
  for (const el of document.querySelectorAll(`[data-pid="${CSS.escape(id)}"]`)) paint(el, id);
  if (S.view === 'detail' && S.detailId === id) scheduleDetailRefresh();
  if (S.view === 'me' && meId() === id) scheduleMeRefresh();
}
function paint(el, id) {
  const p = S.presence.get(id);
  const d = describe(p);
  const person = S.people.get(id);
  const old = el.querySelector('.state');
  if (old) old.replaceWith(stateNode(p));
  el.dataset.state = d.cls;
  el.classList.toggle('stale', d.stale);
  if (el.classList.contains('lamp')) el.setAttribute('aria-label', `${person?.name || id}: ${d.text}${d.stale ? ' (' + t('stale') + ')' : ''}`);
  const note = el.querySelector('.note');
  if (note) { note.textContent = d.note || ''; note.hidden = !d.note; }
}

// ---- Views ------------------------------------------------------------------------------------
function show(view) {
  S.view = view;
  for (const v of ['login', 'search', 'detail', 'lamps', 'me', 'audit']) $('#view-' + v).hidden = v !== view;
  $('#nav').hidden = view === 'login';
  $('#signout').hidden = view === 'login';
  for (const v of ['search', 'lamps', 'me', 'audit']) $('#nav-' + v).toggleAttribute('aria-current', view === v);
  showRoles();
  if (view !== 'login') rewatch();
}
/// What the signed-in caller may see: "My status" for a person in the directory, the audit
/// log for admins, and for a person the directory does not know, why they cannot set a status.
function showRoles() {
  $('#nav-me').hidden = !meId();
  $('#nav-audit').hidden = S.me?.role !== 'admin';
  $('#nodir').hidden = S.view === 'login' || !(S.me && S.me.via === 'oidc' && !S.me.in_directory);
}
/// The signed-in person's directory id (people signed in with the identity provider), if any.
function meId() { return S.me?.person?.id || null; }
/// May the caller set, change and clear the absences of person `id`? Operators and admins
/// anyone's; a signed-in colleague (role self) their own; a viewer nobody's.
function mayWrite(id) {
  const role = S.me?.role;
  return role === 'operator' || role === 'admin' || (role === 'self' && !!id && id === meId());
}
function forbiddenText() {
  const role = S.me?.role || 'viewer';
  return role === 'self' ? t('abs.forbidden.self') : t('abs.forbidden', { role: t('role.' + role) });
}
function route() {
  if (!S.token && !S.me) { showLogin(); return; }
  const hash = location.hash || '#/';
  if (hash.startsWith('#/u/')) { openDetail(decodeURIComponent(hash.slice(4))); return; }
  if (hash.startsWith('#/lamps')) { showLamps(); return; }
  if (hash.startsWith('#/me')) { showMe(); return; }
  if (hash.startsWith('#/audit')) { showAudit(); return; }
  showSearch();
}
/// A view the caller may not have: back to search, saying why.
function refuseView(message) {
  history.replaceState(null, '', location.pathname + '#/');
  showSearch();
  toast(message);
}
function go(hash) { if (location.hash === hash) route(); else location.hash = hash; }

// Login
/// The sign-in view: "Sign in with {provider}" when the hub has [auth.oidc] (it comes back to
/// this page and hash), then the token form; a failed provider sign-in in words.
function showLogin(message) {
  show('login');
  $('#login-error').textContent = message || '';
  const oidc = S.ui.oidc;
  $('#signin-oidc-box').hidden = !oidc;
  if (oidc) {
    const a = $('#signin-oidc');
    a.textContent = t('signin.with', { name: oidc.name });
    a.href = (oidc.login || '/auth/login') + '?' + new URLSearchParams({ return_to: location.pathname + (location.hash || '') });
  }
  const err = $('#signin-error');
  err.hidden = !S.signinError;
  err.textContent = S.signinError ? signinErrorText(S.signinError) : '';
  const list = $('#demo-list');
  list.replaceChildren(...S.ui.demo_tokens.filter((d) => d.role !== 'admin').map((d) =>
    h('button', { type: 'button', class: 'ghost', 'data-token': d.token, onclick: () => { $('#token').value = d.token; login(); } },
      `${d.token} (${t('role.' + d.role)})`)));
  $('#demo-tokens').hidden = !S.ui.demo_tokens.length;
  (oidc ? $('#signin-oidc') : $('#token')).focus();
}
const SIGNIN_ERRORS = ['denied', 'provider', 'refused', 'expired', 'unavailable'];
function signinErrorText(code) {
  return SIGNIN_ERRORS.includes(code) ? t('signin.error.' + code) : t('signin.error.other');
}
/// `?signin_error=<code>` from a failed provider sign-in: remembered for the sign-in view and
/// taken out of the address (a reload or a bookmark should not show it again).
function takeSigninError() {
  const q = new URLSearchParams(location.search);
  const code = q.get('signin_error');
  if (code === null) return null;
  q.delete('signin_error');
  const rest = q.toString();
  history.replaceState(null, '', location.pathname + (rest ? '?' + rest : '') + location.hash);
  return code.slice(0, 40);
}
async function login() {
  const token = $('#token').value.trim();
  if (!token) return;
  S.token = token;
  try {
    S.me = await api('/api/me', { login: true });
  } catch (e) {
    S.token = null;
    $('#login-error').textContent = e.status === 401 || e.status === 403 ? t('login.bad') : t('login.down');
    return;
  }
  store.set('token', token);
  $('#token').value = '';
  S.signinError = null;
  await afterSignIn();
  if (location.hash.startsWith('#/login') || !location.hash) location.hash = '#/';
  route();
}
/// Forgets who was signed in and shows the sign-in view.
function signOut(message) {
  S.token = null;
  S.me = null;
  store.del('token');
  live.stop();
  setConn('idle');
  $('#who').textContent = '';
  M.detail = null;
  M.key = '';
  M.sel = null;
  showLogin(message);
}
/// The sign-out button: a token is forgotten; a session is ended at the hub (POST
/// /auth/logout), then at the identity provider when it offers that (RP-initiated logout: it
/// comes back to the hub's page afterwards).
async function signOutClicked() {
  if (!bySession()) { signOut(); return; }
  let res = null;
  try {
    res = await api('/auth/logout', { method: 'POST', login: true });
  } catch (e) {
    // 401: the session had already ended; anything else leaves the person signed in.
    if (e.status !== 401) { toast(t('signout.failed', { detail: e.message })); return; }
  }
  if (res?.end_session_url) {
    live.stop();
    S.token = null;
    S.me = null;
    location.href = res.end_session_url;
    return;
  }
  signOut();
}
async function afterSignIn() {
  $('#who').textContent = S.me ? t('who', { name: S.me.name, role: t('role.' + S.me.role) }) : '';
  showRoles();
  live.start();
  const [reasons, depts, groups] = await Promise.all([
    api('/api/absence-reasons').catch(() => []),
    api('/api/departments').catch(() => []),
    api('/api/groups').catch(() => []),
  ]);
  S.reasons = reasons || [];
  S.depts = depts || [];
  S.groups = groups || [];
  S.listsLoaded = true;
  fillDepartments();
  fillLampSources();
  for (const id of S.presence.keys()) changed(id);
}

// Search
function showSearch() {
  show('search');
  const q = $('#q');
  q.focus();
  if (!S.results.length && !S.searched) search();
  else rewatch();
}
function fillDepartments() {
  const sel = $('#dept');
  const cur = sel.value;
  sel.replaceChildren(h('option', { value: '', text: t('search.alldepts') }), ...S.depts.map((d) => h('option', { value: d.name, text: `${d.name} (${d.people})` })));
  sel.value = cur;
}
let searchTimer = 0;
function searchSoon() { clearTimeout(searchTimer); searchTimer = setTimeout(search, 90); }
async function search(more) {
  const gen = ++S.searchGen;
  const q = $('#q').value;
  const dept = $('#dept').value;
  const offset = more ? S.results.length : 0;
  const params = new URLSearchParams({ q, limit: '40', offset: String(offset) });
  if (dept) params.set('department', dept);
  let res;
  try { res = await api('/api/users?' + params); } catch (e) { if (e.status !== 401) toast(t('err.generic', { detail: e.message })); return; }
  if (gen !== S.searchGen) return; // a newer search answered first
  S.searched = true;
  remember(res.items);
  S.results = more ? S.results.concat(res.items) : res.items;
  S.total = res.total;
  if (!more) S.active = S.results.length ? 0 : -1;
  renderResults();
  rewatch();
}
function renderResults() {
  const ul = $('#results');
  ul.replaceChildren(...S.results.map((p, i) => resultRow(p, i)));
  const n = S.total;
  $('#count').textContent = n === 0 ? t('search.none') : (n === 1 ? t('search.count1') : t('search.count', { n })) +
    (S.results.length < n ? ' · ' + t('search.shown', { n: S.results.length }) : '');
  $('#more').hidden = S.results.length >= n;
  setActive(S.active, false);
}
function numbers(p) {
  const out = [];
  if (p.extension) out.push(h('span', { class: 'num', title: t('d.ext') }, p.extension));
  for (const ph of p.phones || []) if (ph.kind === 'mobile' || ph.kind === 'work') out.push(h('span', { class: 'num', title: t('phone.' + ph.kind) }, ph.number));
  return out;
}
function resultRow(p, i) {
  const li = h('li', { id: 'r-' + i, role: 'option', class: 'result', 'data-pid': p.id, 'aria-selected': 'false',
    onclick: () => { S.active = i; openFrom('#/'); }, onmousemove: () => { if (S.active !== i) setActive(i, false); } },
  stateNode(S.presence.get(p.id)),
  h('span', { class: 'who-col' },
    h('span', { class: 'name' }, p.name, S.lamps.includes(p.id) ? h('span', { class: 'pin', title: t('lamps.mine'), text: '●' }) : null),
    h('span', { class: 'sub' }, [p.title, p.department].filter(Boolean).join(' · '))),
  h('span', { class: 'nums' }, numbers(p)),
  h('span', { class: 'note', hidden: true }));
  paint(li, p.id);
  return li;
}
function setActive(i, scroll = true) {
  const ul = $('#results');
  const prev = ul.querySelector('[aria-selected="true"]');
  if (prev) prev.setAttribute('aria-selected', 'false');
  S.active = i;
  const el = i >= 0 ? document.getElementById('r-' + i) : null;
  if (el) {
    el.setAttribute('aria-selected', 'true');
    $('#q').setAttribute('aria-activedescendant', el.id);
    if (scroll) el.scrollIntoView({ block: 'nearest' });
  } else $('#q').removeAttribute('aria-activedescendant');
}
function activePerson() {
  if (S.view === 'search') return S.results[S.active];
  if (S.view === 'detail') return S.detail || S.people.get(S.detailId);
  if (S.view === 'lamps') { const el = document.activeElement; return el?.dataset?.pid ? S.people.get(el.dataset.pid) || { id: el.dataset.pid } : null; }
  if (S.view === 'me') return mePerson();
  return null;
}
function openFrom(back) {
  const p = S.results[S.active];
  if (!p) return;
  S.backTo = back;
  go('#/u/' + encodeURIComponent(p.id));
}

// Detail
let detailRefresh = 0;
function scheduleDetailRefresh() {
  if (detailRefresh) return;
  detailRefresh = setTimeout(() => { detailRefresh = 0; if (S.view === 'detail') loadDetail(S.detailId, true); }, 300);
}
async function openDetail(id) {
  const same = S.detailId === id && S.detail;
  S.detailId = id;
  show('detail');
  if (!same) { S.detail = null; $('#view-detail').replaceChildren(h('p', { class: 'hint', text: '…' })); }
  await loadDetail(id, same);
  const hd = $('#d-name');
  if (hd && !same) hd.focus();
}
async function loadDetail(id, quiet) {
  let d;
  try { d = await api('/api/users/' + encodeURIComponent(id)); } catch (e) {
    if (S.detailId === id && !quiet) $('#view-detail').replaceChildren(h('p', { class: 'error', text: e.message }));
    return;
  }
  if (S.detailId !== id || S.view !== 'detail') return;
  // Ages tick locally; re-render only when something else changed, so focus and clicks land.
  const key = JSON.stringify(d, (k, v) => (k === 'age_s' ? undefined : v)) + S.lang;
  if (key === S.detailKey && S.detail) return;
  S.detailKey = key;
  const focusedId = document.activeElement?.id;
  S.detail = d;
  S.detailAt = Date.now();
  S.people.set(d.id, { ...S.people.get(d.id), ...d });
  const cur = S.presence.get(d.id);
  if (!cur || !live.connected || (cur.since || '') <= (d.presence.since || '')) S.presence.set(d.id, d.presence);
  renderDetail();
  rewatch();
  if (focusedId && document.getElementById(focusedId)) document.getElementById(focusedId).focus();
}
function sourceLine(s) {
  // The instance (a device, a calendar, a feed) is shown only where it adds something; a
  // feed's second slot ("telenor-absence", "omnipcx-routing") is named by what it holds.
  const m = /^(.+)-(absence|routing)$/.exec(s.instance || '');
  const base = m ? m[1] : s.instance;
  const inst = base && !['api', 'default', 'manual', s.source].includes(base.toLowerCase()) && s.source !== 'manual';
  // The hub's own stand-in for the view known before a restart is named in words.
  const instName = base === 'restored' ? t('src.restored') : base;
  const name = t('src.' + s.source) + (m ? ' ' + t('src.part.' + m[2]) : '') + (inst ? ` (${instName})` : '');
  let state;
  const act = s.activity && actWord(s.activity);
  const av = s.availability ? t('avail.' + s.availability) : null;
  if (s.source === 'calendar' && s.valid_from && s.valid_until) {
    state = (act || av || '') + ' ' + t('abs.range', { a: when(Date.parse(s.valid_from)), b: clock(Date.parse(s.valid_until)) });
  } else state = act || av || t('avail.Unknown');
  const li = h('li', { class: `src s-${avClass(s.availability)}`, 'data-source': s.source },
    icon(CALLS.has(s.activity) ? 'phone' : { ok: 'ok', busy: 'busy', dnd: 'dnd', away: 'away', off: 'off', unk: 'unk' }[avClass(s.availability)]),
    h('span', { class: 'src-text' }, h('b', {}, name + ': '), state,
      h('span', { class: 'age', 'data-age': s.age_s }, ' — ' + age(s.age_s))),
    s.freshness !== 'live' ? h('span', { class: 'tag', text: t('fresh.' + s.freshness) }) : null,
    s.ooo ? h('span', { class: 'tag', text: t('ooo') }) : null,
    s.private ? h('span', { class: 'tag', text: t('d.private') }) : null);
  if (s.subject || s.location) li.append(h('span', { class: 'subject', text: [s.subject, s.location].filter(Boolean).join(' · ') }));
  if (s.note) li.append(h('span', { class: 'subject', text: s.note }));
  return li;
}
/// One absence of `person`, with Change and Clear when the caller may write them.
function absenceLine(a, person) {
  const label = (S.lang === 'sv' ? a.label_sv : a.label_en) || a.reason;
  const start = Date.parse(a.start);
  const range = a.end ? t('abs.range', { a: a.active ? t('d.now') : when(start), b: when(Date.parse(a.end)) })
    : (a.active ? t('abs.open') : t('abs.from', { t: when(start) }) + ', ' + t('abs.open'));
  const canEdit = mayWrite(person.id);
  return h('li', { class: 'absence', 'data-absence': a.id },
    h('span', {}, h('b', {}, label), a.text ? ' — ' + a.text : '', h('span', { class: 'muted', text: ' · ' + range }),
      h('span', { class: 'tag', text: a.active ? t('d.now') : t('d.planned') }),
      a.created_by ? h('span', { class: 'muted small', text: ' ' + t('d.by', { name: a.created_by }) }) : null),
    canEdit ? h('span', { class: 'btns' },
      h('button', { type: 'button', class: 'ghost', id: 'abs-edit-' + a.id, 'data-act': 'edit', onclick: () => openAbsence(person, a) }, t('d.edit')),
      h('button', { type: 'button', class: 'ghost danger', id: 'abs-clear-' + a.id, 'data-act': 'clear', onclick: () => clearAbsence(person, a) }, t('d.clear'))) : null);
}
function renderDetail() {
  const d = S.detail;
  const p = S.presence.get(d.id) || d.presence;
  const desc = describe(p);
  const again = p.available_again_at ? Date.parse(p.available_again_at) : null;
  const inLamps = S.lamps.includes(d.id);
  const operator = mayWrite(d.id);
  const phones = (d.phones || []).map((ph) => h('li', {}, h('span', { class: 'muted', text: t('phone.' + ph.kind) + ' ' }), h('a', { href: 'tel:' + (ph.e164 || ph.number) }, ph.number)));
  if (d.extension) phones.unshift(h('li', {}, h('span', { class: 'muted', text: t('d.ext') + ' ' }), h('b', {}, d.extension)));
  if (d.email) phones.push(h('li', {}, h('span', { class: 'muted', text: t('d.email') + ' ' }), h('a', { href: 'mailto:' + d.email }, d.email)));
  if (d.sip_uri) phones.push(h('li', {}, h('span', { class: 'muted', text: t('d.sip') + ' ' }), d.sip_uri));
  const sec = $('#view-detail');
  sec.replaceChildren(
    h('div', { class: 'd-head', 'data-pid': d.id },
      h('button', { type: 'button', class: 'ghost back', onclick: back, 'aria-keyshortcuts': 'Escape' }, '← ' + t('d.back')),
      h('h1', { id: 'd-name', tabindex: '-1' }, d.name),
      h('p', { class: 'sub' }, [d.title, d.department].filter(Boolean).join(' · ')),
      h('div', { class: 'd-state' }, stateNode(p, 'p')),
      again && again > Date.now() ? h('p', { class: 'again' }, h('span', { class: 'muted', text: t('d.again') + ': ' }), h('b', { id: 'd-again' }, when(again))) : null,
      desc.note ? h('p', { class: 'note', id: 'd-note' }, h('span', { class: 'muted', text: t('d.note') + ': ' }), desc.note) : null,
      h('div', { class: 'actions' },
        h('button', { type: 'button', class: operator ? 'primary' : 'ghost', id: 'd-absence', 'aria-keyshortcuts': 'A', onclick: () => openAbsence(d) }, t('d.setabsence'), h('kbd', {}, 'A')),
        h('button', { type: 'button', class: 'ghost', id: 'd-lamp', 'aria-pressed': String(inLamps), 'aria-keyshortcuts': 'B', onclick: () => toggleLamp(d) },
          inLamps ? t('d.removelamp') : t('d.addlamp'), h('kbd', {}, 'B')))),
    h('div', { class: 'd-cols' },
      h('section', { class: 'card', 'aria-labelledby': 'd-why' }, h('h2', { id: 'd-why' }, t('d.why')),
        d.sources.length ? h('ul', { class: 'sources', id: 'd-sources' }, d.sources.map(sourceLine)) : h('p', { class: 'muted', text: t('d.nosources') })),
      h('section', { class: 'card', 'aria-labelledby': 'd-abs' }, h('h2', { id: 'd-abs' }, t('d.absences')),
        d.absences.length ? h('ul', { class: 'absences', id: 'd-absences' }, d.absences.map((a) => absenceLine(a, d))) : h('p', { class: 'muted', text: t('d.noabsences') })),
      h('section', { class: 'card', 'aria-labelledby': 'd-num' }, h('h2', { id: 'd-num' }, t('d.numbers')), h('ul', { class: 'phones' }, phones))));
}
function back() { go(S.backTo || '#/'); }
// Ages in the detail and My status views count up between refreshes; the quick-set
// buttons' default ends move on with the clock.
let tickMinute = 0;
setInterval(() => {
  if (S.view === 'detail' && S.detail) {
    const extra = (Date.now() - S.detailAt) / 1000;
    for (const el of document.querySelectorAll('#view-detail .age')) el.textContent = ' — ' + age(+el.dataset.age + extra);
  }
  if (S.view === 'me' && M.detail) {
    const extra = (Date.now() - M.at) / 1000;
    for (const el of document.querySelectorAll('#view-me .age')) el.textContent = ' — ' + age(+el.dataset.age + extra);
    const minute = Math.floor(Date.now() / 60000);
    if (minute !== tickMinute) { tickMinute = minute; reasonHints(); }
    // A planned absence set elsewhere changes nothing the stream carries yet: look now and then.
    if (Date.now() - M.fetched > 60000) { M.fetched = Date.now(); loadMe(true); }
  }
}, 1000);

// Lamps
function fillLampSources() {
  const sel = $('#lamp-source');
  const opts = [h('option', { value: 'mine', text: t('lamps.mine') })];
  if (S.groups.length) opts.push(h('optgroup', { label: t('lamps.groups') }, S.groups.map((g) => h('option', { value: 'group:' + g.name, text: g.name }))));
  if (S.depts.length) opts.push(h('optgroup', { label: t('lamps.depts') }, S.depts.map((d) => h('option', { value: 'dept:' + d.name, text: `${d.name} (${d.people})` }))));
  sel.replaceChildren(...opts);
  sel.value = S.lampSource;
  // A saved choice that no longer exists (a group removed from the config) falls back to mine.
  if (sel.value !== S.lampSource && S.listsLoaded) { S.lampSource = 'mine'; sel.value = 'mine'; }
}
async function showLamps() {
  show('lamps');
  await loadLamps();
  const first = $('#lamps .lamp');
  if (first && !$('#lamps').contains(document.activeElement)) first.focus();
}
async function loadLamps() {
  const src = S.lampSource;
  let people = [];
  try {
    if (src.startsWith('dept:')) {
      const res = await api('/api/users?' + new URLSearchParams({ department: src.slice(5), limit: '500' }));
      people = res.items;
    } else {
      const ids = src.startsWith('group:') ? (S.groups.find((g) => 'group:' + g.name === src)?.members || []) : S.lamps;
      const missing = ids.filter((id) => !S.people.has(id));
      await Promise.all(missing.map((id) => api('/api/users/' + encodeURIComponent(id)).then((d) => remember([d])).catch(() => {})));
      people = ids.map((id) => S.people.get(id)).filter(Boolean);
    }
  } catch (e) { if (e.status !== 401) toast(t('err.generic', { detail: e.message })); return; }
  if (src !== S.lampSource || S.view !== 'lamps') return;
  remember(people);
  S.lampIds = people.map((p) => p.id);
  const grid = $('#lamps');
  grid.replaceChildren(...people.map(lampTile));
  $('#lamps-empty').hidden = !(src === 'mine' && !people.length);
  const total = src.startsWith('dept:') ? (S.depts.find((d) => 'dept:' + d.name === src)?.people ?? people.length) : people.length;
  $('#lamp-count').textContent = !people.length ? '' : (total === 1 ? t('search.count1') : t('search.count', { n: total })) +
    (people.length < total ? ' · ' + t('search.shown', { n: people.length }) : '');
  rewatch();
}
function lampTile(p) {
  const el = h('button', { type: 'button', class: 'lamp', role: 'listitem', 'data-pid': p.id,
    onclick: () => { S.backTo = '#/lamps'; go('#/u/' + encodeURIComponent(p.id)); } },
  stateNode(S.presence.get(p.id)), h('span', { class: 'lamp-name', text: p.name }),
  h('span', { class: 'lamp-sub', text: p.extension || p.department || '' }));
  paint(el, p.id);
  return el;
}
function toggleLamp(p) {
  if (!p) return;
  const i = S.lamps.indexOf(p.id);
  if (i >= 0) S.lamps.splice(i, 1); else S.lamps.push(p.id);
  store.set('lamps', S.lamps);
  toast(t(i >= 0 ? 'lamps.removed' : 'lamps.added', { name: p.name || p.id }));
  if (S.view === 'detail') renderDetail();
  if (S.view === 'search') renderResults();
  if (S.view === 'lamps' && S.lampSource === 'mine') {
    const next = document.activeElement?.nextElementSibling || document.activeElement?.previousElementSibling;
    loadLamps().then(() => next?.dataset?.pid && document.querySelector(`#lamps [data-pid="${CSS.escape(next.dataset.pid)}"]`)?.focus());
  }
}
function moveInGrid(key) {
  const tiles = [...document.querySelectorAll('#lamps .lamp')];
  const i = tiles.indexOf(document.activeElement);
  if (!tiles.length) return;
  if (i < 0) { tiles[0].focus(); return; }
  const top = tiles[0].offsetTop;
  const cols = Math.max(1, tiles.findIndex((el) => el.offsetTop !== top) === -1 ? tiles.length : tiles.findIndex((el) => el.offsetTop !== top));
  const step = { ArrowRight: 1, ArrowLeft: -1, ArrowDown: cols, ArrowUp: -cols, Home: -i, End: tiles.length - 1 - i }[key];
  const j = Math.max(0, Math.min(tiles.length - 1, i + step));
  tiles[j].focus();
}

// My status: the signed-in person's own state as the switchboard sees it, their absences, and
// one-step reasons ("Lunch until 13:00": 1, Enter).
const M = { detail: null, at: 0, fetched: 0, key: '', sel: null, askDate: false };
/// The end of the working day, for "gone for the day" and for days picked for a longer absence.
const DAY_END = '17:00';
let meRefresh = 0;
function scheduleMeRefresh() {
  if (meRefresh) return;
  meRefresh = setTimeout(() => { meRefresh = 0; if (S.view === 'me') loadMe(true); }, 300);
}
function mePerson() { return M.detail && M.detail.id === meId() ? M.detail : (S.me?.person || null); }
async function showMe() {
  if (!S.me) { show('me'); return; } // who is signed in is not known yet; boot() routes again
  if (!meId()) { refuseView(S.me.via === 'oidc' && !S.me.in_directory ? t('nodir') : t('me.noperson')); return; }
  const first = S.view !== 'me';
  show('me');
  renderReasons();
  updateMeSave();
  await loadMe(!first);
  if (first && S.view === 'me' && !$('#view-me').contains(document.activeElement)) $('#me-h').focus();
}
async function loadMe(quiet) {
  const id = meId();
  if (!id) return;
  let d;
  try { d = await api('/api/users/' + encodeURIComponent(id)); } catch (e) {
    if (!quiet && e.status !== 401) $('#me-error').textContent = t('err.generic', { detail: e.message });
    return;
  }
  if (S.view !== 'me' || meId() !== d.id) return;
  M.fetched = Date.now();
  const key = JSON.stringify(d, (k, v) => (k === 'age_s' ? undefined : v)) + S.lang;
  if (key === M.key && M.detail) return;
  M.key = key;
  M.detail = d;
  M.at = Date.now();
  S.people.set(d.id, { ...S.people.get(d.id), ...d });
  const cur = S.presence.get(d.id);
  if (!cur || !live.connected || (cur.since || '') <= (d.presence.since || '')) S.presence.set(d.id, d.presence);
  renderMe();
  rewatch();
}
function renderMe() {
  const d = M.detail;
  if (!d) return;
  const focused = document.activeElement;
  const focusedId = focused?.id;
  const p = S.presence.get(d.id) || d.presence;
  const desc = describe(p);
  const again = p.available_again_at ? Date.parse(p.available_again_at) : null;
  const head = $('#me-head');
  head.dataset.pid = d.id;
  const sub = [d.title, d.department].filter(Boolean).join(' · ');
  head.replaceChildren(...[
    h('p', { class: 'me-name' }, h('b', { id: 'me-name' }, d.name), sub ? h('span', { class: 'muted', text: ' · ' + sub }) : null),
    h('div', { class: 'd-state', id: 'me-state' }, stateNode(p, 'p')),
    again && again > Date.now() ? h('p', { class: 'again' }, h('span', { class: 'muted', text: t('d.again') + ': ' }), h('b', { id: 'me-again' }, when(again))) : null,
    desc.note ? h('p', { class: 'me-note', id: 'me-note' }, h('span', { class: 'muted', text: t('d.note') + ': ' }), desc.note) : null].filter(Boolean));
  $('#me-sources').replaceChildren(...d.sources.map(sourceLine));
  $('#me-nosources').hidden = d.sources.length > 0;
  $('#me-absences').replaceChildren(...d.absences.map((a) => absenceLine(a, d)));
  $('#me-noabs').hidden = d.absences.length > 0;
  // A re-render replaced the focused button (Clear, Change): focus what now has its id.
  if (focusedId && !document.contains(focused)) document.getElementById(focusedId)?.focus();
}
function reasonText(r) { return (S.lang === 'sv' ? r.label_sv : r.label_en) || r.code; }
/// A reason's default end, in ms, or 'date' when it asks for a date (longer absences):
/// lunch until 13:00 when set before 12:00, else an hour, rounded up to the quarter hour;
/// "back soon" a quarter of an hour; gone for the day, sick or working elsewhere until the end
/// of the working day (or 8 hours when set after it); an out-of-office reason (vacation, a
/// course…) until a day the person picks; anything else an hour.
function defaultEnd(r, now = Date.now()) {
  const day = wallDate(now);
  const quarter = (ms) => Math.ceil(ms / 900000) * 900000;
  const dayEnd = wallToMs(day, DAY_END);
  if (r.code === 'lunch') return now < wallToMs(day, '12:00') ? wallToMs(day, '13:00') : quarter(now + 3600000);
  if (r.code === 'back_soon') return Math.ceil((now + 15 * 60000) / 300000) * 300000;
  if (r.code === 'gone_for_the_day' || r.code === 'working_elsewhere' || r.activity === 'OffWork' || r.activity === 'Sick') {
    return now < dayEnd ? dayEnd : quarter(now + 8 * 3600000);
  }
  if (r.ooo) return 'date';
  return quarter(now + 3600000);
}
function endHint(r) {
  const end = defaultEnd(r);
  return end === 'date' ? t('me.askdate') : t('me.until', { t: when(end) });
}
function renderReasons() {
  const box = $('#me-reasons');
  const focused = document.activeElement?.dataset?.reason;
  box.replaceChildren(...S.reasons.map((r, i) => h('button', {
    type: 'button', class: 'reason', 'data-reason': r.code, 'aria-pressed': String(M.sel === r.code),
    'aria-keyshortcuts': i < 9 ? String(i + 1) : null, onclick: () => pickReason(r.code),
  }, h('span', { class: 'r-label', text: reasonText(r) }), h('span', { class: 'r-end' }), i < 9 ? h('kbd', {}, String(i + 1)) : null)));
  reasonHints();
  if (focused) box.querySelector(`[data-reason="${CSS.escape(focused)}"]`)?.focus();
}
function reasonHints() {
  for (const b of document.querySelectorAll('#me-reasons .reason')) {
    const r = S.reasons.find((x) => x.code === b.dataset.reason);
    if (r) b.querySelector('.r-end').textContent = endHint(r);
  }
}
/// Picks a reason: fills in its default end and moves to Set (or to the date, for a reason
/// that asks for one), so Enter sets it.
function pickReason(code) {
  const r = S.reasons.find((x) => x.code === code);
  if (!r) return;
  M.sel = code;
  $('#me-error').textContent = '';
  for (const b of document.querySelectorAll('#me-reasons .reason')) b.setAttribute('aria-pressed', String(b.dataset.reason === code));
  const end = defaultEnd(r);
  setMeOpen(false);
  M.askDate = end === 'date';
  if (M.askDate) {
    $('#me-date').value = '';
    $('#me-time').value = DAY_END;
  } else {
    $('#me-date').value = wallDate(end);
    $('#me-time').value = wallTime(end);
  }
  meHint();
  updateMeSave();
  (M.askDate ? $('#me-date') : $('#me-save')).focus();
}
function clearPick() {
  M.sel = null;
  M.askDate = false;
  $('#me-date').value = '';
  $('#me-time').value = '';
  $('#me-text').value = '';
  $('#me-error').textContent = '';
  setMeOpen(false);
  meHint();
  for (const b of document.querySelectorAll('#me-reasons .reason')) b.setAttribute('aria-pressed', 'false');
  updateMeSave();
}
function setMeOpen(open) {
  $('#me-open').checked = open;
  $('#me-date').disabled = open;
  $('#me-time').disabled = open;
}
function meHint() { $('#me-hint').textContent = M.sel && M.askDate ? t('me.askdate.hint', { t: DAY_END }) : ''; }
/// The end the form says: ms, null for "until further notice", undefined while incomplete.
function meEnd() {
  if ($('#me-open').checked) return null;
  const date = $('#me-date').value;
  const time = $('#me-time').value;
  if (!date || !time) return undefined;
  return wallToMs(date, time);
}
/// "Lunch until 13:00": what Set will set.
function meWhat() {
  const r = S.reasons.find((x) => x.code === M.sel);
  if (!r) return '';
  const end = meEnd();
  return reasonText(r) + (end === null ? ' ' + t('abs.open') : end ? ' ' + t('me.until', { t: when(end) }) : '');
}
function updateMeSave() {
  const b = $('#me-save');
  b.disabled = !M.sel;
  b.textContent = M.sel ? t('me.setwhat', { what: meWhat() }) : t('me.choose');
}
async function saveMine() {
  const id = meId();
  const r = S.reasons.find((x) => x.code === M.sel);
  const err = $('#me-error');
  if (!id) return;
  if (!r) { err.textContent = t('me.choose'); $('#me-reasons .reason')?.focus(); return; }
  const end = meEnd();
  if (end === undefined) {
    const noDate = !$('#me-date').value;
    err.textContent = t(noDate ? 'me.needdate' : 'me.needtime');
    $(noDate ? '#me-date' : '#me-time').focus();
    return;
  }
  if (end !== null && end <= Date.now()) { err.textContent = t('me.past'); $('#me-time').focus(); return; }
  const what = meWhat();
  const body = { reason: r.code, text: $('#me-text').value.trim() || null };
  if (end !== null) body.end = new Date(end).toISOString();
  $('#me-save').disabled = true;
  try {
    const res = await api('/api/users/' + encodeURIComponent(id) + '/absences', { method: 'POST', body });
    if (res?.presence) { S.presence.set(id, res.presence); changed(id); }
    clearPick();
    toast(t('me.saved', { what }));
    await loadMe(true);
    $('#me-h').focus();
  } catch (e) {
    err.textContent = e.status === 403 ? forbiddenText() : t('err.generic', { detail: e.message });
  } finally {
    updateMeSave();
  }
}
/// The full absence dialog (a later start, any end), filled in with what the form has so far.
function moreOptions() {
  const p = mePerson();
  if (!p) return;
  openAbsence(p);
  if (!$('#absence-dialog').open) return;
  if (M.sel) $('#a-reason').value = M.sel;
  const end = meEnd();
  if (end !== undefined) setUntil(end);
  if ($('#me-text').value.trim()) $('#a-text').value = $('#me-text').value.trim();
}

// Audit log (admins): newest first, filtered by action, actor, target and days, paged with
// "More"; the same filters download as CSV.
const AUDIT_ACTIONS = ['absence.created', 'absence.changed', 'absence.cleared', 'signin', 'signin.failed', 'signout',
  'session.revoked', 'token.refused', 'csrf.refused', 'directory.sync', 'provider.restarted', 'config.reloaded', 'signals.pushed'];
const AUDIT_PAGE = 100;
const AU = { entries: [], next: null, gen: 0 };
function fillAuditActions() {
  const sel = $('#audit-action');
  const cur = sel.value;
  sel.replaceChildren(h('option', { value: '', text: t('audit.all') }), h('option', { value: 'absence.*', text: t('audit.family.absence') }),
    ...AUDIT_ACTIONS.map((a) => h('option', { value: a, text: t('audit.action.' + a) })));
  sel.value = cur;
}
function nextDay(date) {
  const [y, m, d] = date.split('-').map(Number);
  return new Date(Date.UTC(y, m - 1, d + 1)).toISOString().slice(0, 10);
}
/// The filters as query parameters. Days are whole days in the hub's time zone; "To" includes its day.
function auditFilters() {
  const q = new URLSearchParams();
  const v = (id) => $(id).value.trim();
  if (v('#audit-action')) q.set('action', v('#audit-action'));
  if (v('#audit-actor')) q.set('actor', v('#audit-actor'));
  if (v('#audit-target')) q.set('target', v('#audit-target'));
  if (/^\d{4}-\d\d-\d\d$/.test(v('#audit-since'))) q.set('since', new Date(wallToMs(v('#audit-since'), '00:00')).toISOString());
  if (/^\d{4}-\d\d-\d\d$/.test(v('#audit-until'))) q.set('until', new Date(wallToMs(nextDay(v('#audit-until')), '00:00')).toISOString());
  return q;
}
function csvHref() { const q = auditFilters().toString(); return '/api/audit.csv' + (q ? '?' + q : ''); }
async function showAudit() {
  if (!S.me) { show('audit'); return; } // who is signed in is not known yet; boot() routes again
  if (S.me.role !== 'admin') { refuseView(t('audit.forbidden', { role: t('role.' + S.me.role) })); return; }
  const first = S.view !== 'audit';
  show('audit');
  fillAuditActions();
  await Promise.all([loadAudit(false), loadSessions()]);
  if (first && S.view === 'audit' && !$('#view-audit').contains(document.activeElement)) $('#audit-action').focus();
}
async function loadAudit(more) {
  const gen = ++AU.gen;
  $('#audit-csv').href = csvHref();
  const q = auditFilters();
  q.set('limit', String(AUDIT_PAGE));
  if (more && AU.next != null) q.set('before', String(AU.next));
  $('#audit-more').disabled = true;
  let res;
  try { res = await api('/api/audit?' + q); } catch (e) {
    if (gen === AU.gen && e.status !== 401) $('#audit-error').textContent = t('err.generic', { detail: e.message });
    return;
  } finally {
    $('#audit-more').disabled = false;
  }
  if (gen !== AU.gen || S.view !== 'audit') return;
  $('#audit-error').textContent = '';
  AU.entries = more ? AU.entries.concat(res.entries) : res.entries;
  AU.next = res.next_before ?? null;
  renderAudit(more ? res.entries : null);
}
function renderAudit(added) {
  const body = $('#audit-table tbody');
  if (added) body.append(...added.map(auditRow)); else body.replaceChildren(...AU.entries.map(auditRow));
  const n = AU.entries.length;
  $('#audit-empty').hidden = n > 0;
  $('#audit-count').textContent = n === 0 ? '' : n === 1 ? t('audit.count1') : t('audit.count', { n });
  $('#audit-more').hidden = AU.next == null;
}
/// "2026-03-02 13:04:05" in the hub's time zone.
function stamp(ms) { return `${wallDate(ms)} ${wallTime(ms)}:${pad(parts(ms).second)}`; }
const word = (prefix, v) => (v && has(prefix + v) ? t(prefix + v) : v || '');
function auditRow(e) {
  const at = Date.parse(e.at);
  const how = [word('role.', e.role), word('audit.via.', e.via)].filter(Boolean).join(', ');
  return h('tr', { 'data-seq': e.seq, 'data-action': e.action },
    h('td', { class: 'at' }, Number.isFinite(at) ? stamp(at) : e.at),
    h('td', { class: 'actor' }, h('span', { class: 'name', text: e.actor }), how ? h('span', { class: 'sub', text: how }) : null),
    h('td', { class: 'action' }, word('audit.action.', e.action)),
    h('td', { class: 'target' }, auditTarget(e)),
    h('td', { class: 'detail' }, auditDetail(e)),
    h('td', { class: 'ip' }, e.ip || ''));
}
function auditTarget(e) {
  if (!e.target) return '';
  if (e.action.startsWith('absence.')) {
    const name = S.people.get(e.target)?.name;
    return h('a', { href: '#/u/' + encodeURIComponent(e.target), onclick: () => { S.backTo = '#/audit'; } }, name ? `${name} (${e.target})` : e.target);
  }
  if (/^[0-9a-f]{32}$/.test(e.target)) return t('audit.d.session', { id: e.target.slice(0, 8) + '…' });
  return e.target;
}
/// An absence as the audit log keeps it: "Lunch · “Back soon” · until 13:00".
function absSummary(x, at) {
  if (!x || typeof x !== 'object') return '';
  const bits = [reasonLabel(x.reason) || x.reason];
  if (x.text) bits.push(`“${x.text}”`);
  const start = Date.parse(x.start);
  if (Number.isFinite(start) && start > at + 60000) bits.push(t('audit.d.from', { t: when(start) }));
  bits.push(x.end ? t('audit.d.until', { t: when(Date.parse(x.end)) }) : t('abs.open'));
  return bits.join(' · ');
}
function compact(d) {
  return Object.entries(d).filter(([k]) => k !== 'suppressed_before')
    .map(([k, v]) => `${k}: ${v !== null && typeof v === 'object' ? JSON.stringify(v) : v}`).join(', ');
}
/// An entry's detail in a line: old → new for a changed absence, why for a refusal.
function auditDetail(e) {
  const d = e.detail;
  if (d == null) return '';
  if (typeof d !== 'object') return String(d);
  const at = Date.parse(e.at);
  const out = [];
  switch (e.action) {
    case 'absence.created': out.push(absSummary(d.new, at)); break;
    case 'absence.changed': out.push(absSummary(d.old, at) + ' → ' + absSummary(d.new, at)); break;
    case 'absence.cleared': out.push(absSummary(d.old, at)); break;
    case 'signin':
      if (d.in_directory === false) out.push(t('audit.d.notindir'));
      if (Array.isArray(d.claim_roles) && d.claim_roles.length) out.push(t('audit.d.claims', { list: d.claim_roles.join(', ') }));
      break;
    case 'signin.failed':
      out.push(SIGNIN_ERRORS.includes(d.code) ? t('audit.failed.' + d.code) : d.code, d.reason);
      break;
    case 'token.refused': case 'csrf.refused':
      out.push([d.method, d.path].filter(Boolean).join(' '), d.reason);
      break;
    case 'session.revoked': out.push([d.name, d.person && d.person !== d.name ? `(${d.person})` : null].filter(Boolean).join(' ')); break;
    case 'directory.sync':
      out.push(t('audit.d.sync', { kind: word('audit.d.sync.', d.kind), sources: (Array.isArray(d.sources) ? d.sources.join(', ') : '') || '—' }));
      if (d.force) out.push(t('audit.d.force'));
      break;
    case 'config.reloaded':
      if (d.error) out.push(t('audit.d.refused', { why: d.error }));
      if (Array.isArray(d.applied) && d.applied.length) out.push(t('audit.d.applied', { list: d.applied.join(', ') }));
      if (Array.isArray(d.restart_needed) && d.restart_needed.length) out.push(t('audit.d.restart', { list: d.restart_needed.join(', ') }));
      break;
    case 'signals.pushed':
      out.push(t('audit.d.pushed', { requests: d.requests, signals: d.signals, t: when(Date.parse(d.minute)) }));
      break;
    default: out.push(compact(d));
  }
  if (d.suppressed_before) out.push(t('audit.d.suppressed', { n: d.suppressed_before }));
  return out.filter(Boolean).join(' · ');
}
/// A token cannot ride on a plain link: fetch the CSV with it and save it from a blob: URL
/// (a download, which the page's Content-Security-Policy does not restrict). A session's
/// cookie goes with the plain link by itself.
async function downloadCsv(e) {
  const link = $('#audit-csv');
  link.href = csvHref();
  if (!S.token) return;
  e.preventDefault();
  try {
    let res;
    try { res = await fetch(link.href, { headers: { Authorization: 'Bearer ' + S.token }, cache: 'no-store' }); } catch {
      throw new ApiError(0, { detail: t('err.net') });
    }
    if (!res.ok) { let b = null; try { b = await res.json(); } catch { /* not JSON */ } throw new ApiError(res.status, b); }
    const url = URL.createObjectURL(await res.blob());
    const a = h('a', { href: url, download: 'audit.csv', hidden: true });
    document.body.append(a);
    a.click();
    a.remove();
    setTimeout(() => URL.revokeObjectURL(url), 60000);
  } catch (err) {
    toast(t('audit.csvfailed', { detail: err.message }));
  }
}
// Signed-in sessions (admins), with a button that ends one.
async function loadSessions() {
  let list;
  try { list = await api('/api/sessions'); } catch { $('#sessions').hidden = true; return; }
  if (S.view !== 'audit') return;
  $('#sessions').hidden = !S.ui.oidc && !list.length;
  $('#sessions-table').hidden = !list.length;
  $('#sessions-empty').hidden = list.length > 0;
  $('#sessions-table tbody').replaceChildren(...list.map(sessionRow));
}
function sessionRow(x) {
  const own = S.me?.session?.id === x.id;
  const name = x.name || x.person || x.id;
  const time = (v) => (v && Number.isFinite(Date.parse(v)) ? when(Date.parse(v)) : '');
  return h('tr', { 'data-session': x.id },
    h('td', {}, h('span', { class: 'name', text: name }), x.person && x.person !== name ? h('span', { class: 'sub', text: x.person }) : null,
      own ? h('span', { class: 'tag', text: t('sess.you') }) : null),
    h('td', {}, word('role.', x.role)), h('td', {}, time(x.created_at)), h('td', {}, time(x.last_seen)), h('td', {}, time(x.expires_at)),
    h('td', { class: 'ip' }, x.ip || ''),
    h('td', {}, h('button', { type: 'button', class: 'ghost danger', 'data-revoke': x.id, 'aria-label': t('sess.revokeof', { name }),
      onclick: () => revokeSession(x.id, name) }, t('sess.revoke'))));
}
async function revokeSession(id, name) {
  try {
    await api('/api/sessions/' + encodeURIComponent(id), { method: 'DELETE' });
    toast(t('sess.revoked', { name }));
  } catch (e) {
    if (e.status !== 401) toast(t('err.generic', { detail: e.message }));
  }
  if (S.view === 'audit') { loadSessions(); loadAudit(false); }
}

// Absences
let absenceFor = null;
let absenceEdit = null;
function openAbsence(p, existing) {
  if (!p) return;
  if (!mayWrite(p.id)) { toast(forbiddenText()); return; }
  absenceFor = p;
  absenceEdit = existing || null;
  const name = p.name || p.id;
  $('#a-title').textContent = t(existing ? 'abs.titleEdit' : 'abs.title', { name });
  const sel = $('#a-reason');
  sel.replaceChildren(...S.reasons.map((r) => h('option', { value: r.code, text: S.lang === 'sv' ? r.label_sv : r.label_en })));
  sel.value = existing ? existing.reason : (S.reasons[0]?.code || '');
  $('#a-text').value = existing?.text || '';
  $('#a-error').textContent = '';
  $('#a-tz').textContent = t('abs.tz', { tz: S.ui.time_zone || 'UTC' });
  const later = $('#a-later');
  if (existing) {
    setUntil(existing.end ? Date.parse(existing.end) : null);
    const start = Date.parse(existing.start);
    later.open = start > Date.now();
    $('#a-sdate').value = later.open ? wallDate(start) : '';
    $('#a-stime').value = later.open ? wallTime(start) : '';
  } else {
    const now = Date.now();
    setUntil(Math.ceil((now + 3600000) / 900000) * 900000);
    later.open = false;
    $('#a-sdate').value = '';
    $('#a-stime').value = '';
  }
  $('#absence-dialog').showModal();
  sel.focus();
}
function setUntil(ms) {
  $('#a-date').value = ms ? wallDate(ms) : '';
  $('#a-time').value = ms ? wallTime(ms) : '';
}
function quickUntil(kind) {
  const now = Date.now();
  if (kind === 'none') setUntil(null);
  else if (kind === 'eod') setUntil(wallToMs(wallDate(now), '17:00') > now ? wallToMs(wallDate(now), '17:00') : wallToMs(wallDate(now), '23:55'));
  else setUntil(Math.ceil((now + kind * 60000) / 300000) * 300000);
}
async function saveAbsence() {
  const p = absenceFor;
  const date = $('#a-date').value;
  const time = $('#a-time').value;
  if (!!date !== !!time) { $('#a-error').textContent = t('abs.needtime'); return; }
  const body = { reason: $('#a-reason').value, text: $('#a-text').value.trim() || null };
  if (date) body.end = new Date(wallToMs(date, time)).toISOString();
  const later = $('#a-later');
  if (later.open && $('#a-sdate').value && $('#a-stime').value) body.start = new Date(wallToMs($('#a-sdate').value, $('#a-stime').value)).toISOString();
  else if (absenceEdit) body.start = absenceEdit.active ? absenceEdit.start : new Date().toISOString();
  const base = '/api/users/' + encodeURIComponent(p.id) + '/absences';
  $('#a-save').disabled = true;
  try {
    const res = absenceEdit
      ? await api(base + '/' + encodeURIComponent(absenceEdit.id), { method: 'PUT', body })
      : await api(base, { method: 'POST', body });
    if (res?.presence) { S.presence.set(p.id, res.presence); changed(p.id); }
    $('#absence-dialog').close();
    toast(t('abs.saved', { name: p.name || p.id }));
    if (S.view === 'detail') loadDetail(S.detailId, true);
    if (S.view === 'me') loadMe(true);
  } catch (e) {
    $('#a-error').textContent = e.status === 403 ? forbiddenText() : t('err.generic', { detail: e.message });
  } finally {
    $('#a-save').disabled = false;
  }
}
async function clearAbsence(p, a) {
  try {
    await api('/api/users/' + encodeURIComponent(p.id) + '/absences/' + encodeURIComponent(a.id), { method: 'DELETE' });
    toast(t('abs.cleared', { name: p.name || p.id }));
    if (S.view === 'detail') { await loadDetail(S.detailId, true); $('#d-absence')?.focus(); }
    if (S.view === 'me') { await loadMe(true); $('#me-h').focus(); }
  } catch (e) {
    toast(e.status === 403 ? forbiddenText() : t('err.generic', { detail: e.message }));
  }
}

// ---- Language ----------------------------------------------------------------------------------
function pickLanguage() {
  const saved = store.get('lang', null);
  if (saved === 'sv' || saved === 'en') return saved;
  if (S.ui.language === 'sv' || S.ui.language === 'en') return S.ui.language;
  for (const l of navigator.languages || [navigator.language]) {
    const b = (l || '').toLowerCase().slice(0, 2);
    if (b === 'sv' || b === 'en') return b;
  }
  return 'en';
}
function applyLanguage(lang) {
  S.lang = lang;
  fmtCache.clear();
  document.documentElement.lang = lang;
  for (const el of document.querySelectorAll('[data-i18n]')) el.textContent = t(el.dataset.i18n);
  for (const el of document.querySelectorAll('[data-i18n-ph]')) el.placeholder = t(el.dataset.i18nPh);
  for (const el of document.querySelectorAll('[data-i18n-label]')) el.setAttribute('aria-label', t(el.dataset.i18nLabel));
  const other = lang === 'sv' ? 'en' : 'sv';
  const btn = $('#lang');
  btn.textContent = t('lang.other');
  btn.lang = other;
  btn.setAttribute('aria-label', other === 'sv' ? 'Byt till svenska' : 'Switch to English');
  setConn($('#conn').dataset.state);
  if (S.me) $('#who').textContent = t('who', { name: S.me.name, role: t('role.' + S.me.role) });
  fillDepartments();
  fillLampSources();
  fillAuditActions();
  if (S.view === 'search') renderResults();
  if (S.view === 'detail' && S.detail) renderDetail();
  if (S.view === 'lamps') for (const el of document.querySelectorAll('#lamps .lamp')) paint(el, el.dataset.pid);
  if (S.view === 'me') { renderReasons(); meHint(); updateMeSave(); renderMe(); }
  if (S.view === 'audit') { renderAudit(); loadSessions(); }
  if (S.view === 'login') showLogin($('#login-error').textContent);
}

// ---- Keyboard -------------------------------------------------------------------------------------
document.addEventListener('keydown', (e) => {
  if (e.defaultPrevented || S.view === 'login') return;
  if ($('#absence-dialog').open || $('#help').open) return; // dialogs handle their own keys (Esc closes)
  const k = e.key;
  if (k === 'F1' || (k === '?' && !inField(e))) { e.preventDefault(); $('#help').showModal(); return; }
  if (k === 'F2' || (k === '/' && !inField(e))) { e.preventDefault(); go('#/'); $('#q').focus(); $('#q').select(); return; }
  if (k === 'F4') { e.preventDefault(); go('#/lamps'); return; }
  const letter = (c) => k.toLowerCase() === c && !e.ctrlKey && !e.metaKey && (e.altKey || !inField(e));
  if (letter('a')) { e.preventDefault(); openAbsence(activePerson()); return; }
  if (letter('b')) { e.preventDefault(); toggleLamp(activePerson()); return; }
  if (S.view === 'search') {
    const n = S.results.length;
    if (k === 'ArrowDown' || k === 'ArrowUp' || k === 'PageDown' || k === 'PageUp') {
      if (e.target.id === 'dept') return;
      e.preventDefault();
      if (!n) return;
      const step = { ArrowDown: 1, ArrowUp: -1, PageDown: 10, PageUp: -10 }[k];
      const next = Math.max(0, Math.min(n - 1, S.active + step));
      setActive(next);
      if (next >= n - 3 && n < S.total) search(true);
    } else if (k === 'Enter' && e.target.id !== 'dept' && !e.target.closest('button')) {
      e.preventDefault();
      openFrom('#/');
    } else if (k === 'Escape') {
      e.preventDefault();
      const q = $('#q');
      if (q.value || $('#dept').value) { q.value = ''; $('#dept').value = ''; search(); }
      q.focus();
    }
  } else if (S.view === 'detail') {
    if (k === 'Escape' || (k === 'Backspace' && !inField(e))) { e.preventDefault(); back(); }
  } else if (S.view === 'me') {
    // 1…9 pick a reason (then Enter sets it); Esc forgets the pick.
    if (/^[1-9]$/.test(k) && !inField(e) && !e.ctrlKey && !e.metaKey && !e.altKey && S.reasons[+k - 1]) { e.preventDefault(); pickReason(S.reasons[+k - 1].code); }
    else if (k === 'Escape' && M.sel) { e.preventDefault(); clearPick(); $('#me-h').focus(); }
  } else if (S.view === 'lamps') {
    if (['ArrowRight', 'ArrowLeft', 'ArrowDown', 'ArrowUp', 'Home', 'End'].includes(k) && !inField(e)) { e.preventDefault(); moveInGrid(k); }
    else if ((k === 'Delete' || k === 'Backspace') && !inField(e) && S.lampSource === 'mine') { e.preventDefault(); const p = activePerson(); if (p && S.lamps.includes(p.id)) toggleLamp(S.people.get(p.id) || p); }
    else if (k === 'Escape') { e.preventDefault(); go('#/'); }
  }
});

// ---- Wiring -----------------------------------------------------------------------------------------
function wire() {
  $('#login-form').addEventListener('submit', (e) => { e.preventDefault(); login(); });
  $('#signout').addEventListener('click', () => signOutClicked());
  $('#lang').addEventListener('click', () => { const l = S.lang === 'sv' ? 'en' : 'sv'; store.set('lang', l); applyLanguage(l); });
  $('#help-btn').addEventListener('click', () => $('#help').showModal());
  $('#q').addEventListener('input', () => searchSoon());
  $('#dept').addEventListener('change', () => { search(); $('#q').focus(); });
  $('#more').addEventListener('click', () => search(true));
  $('#lamp-source').addEventListener('change', (e) => { S.lampSource = e.target.value; store.set('lampSource', S.lampSource); loadLamps(); });
  $('#absence-form').addEventListener('submit', (e) => { e.preventDefault(); saveAbsence(); });
  $('#a-cancel').addEventListener('click', () => $('#absence-dialog').close());
  for (const b of document.querySelectorAll('[data-quick]')) b.addEventListener('click', () => quickUntil(b.dataset.quick === 'none' || b.dataset.quick === 'eod' ? b.dataset.quick : +b.dataset.quick));
  $('#absence-dialog').addEventListener('close', () => { (S.view === 'me' ? $('#me-h') : $('#d-absence'))?.focus(); });
  $('#me-form').addEventListener('submit', (e) => { e.preventDefault(); saveMine(); });
  for (const id of ['#me-date', '#me-time']) $(id).addEventListener('input', () => { $('#me-error').textContent = ''; updateMeSave(); });
  $('#me-open').addEventListener('change', (e) => { setMeOpen(e.target.checked); updateMeSave(); });
  $('#me-more').addEventListener('click', () => moreOptions());
  $('#audit-filters').addEventListener('submit', (e) => { e.preventDefault(); loadAudit(false); });
  for (const id of ['#audit-action', '#audit-actor', '#audit-target', '#audit-since', '#audit-until']) $(id).addEventListener('change', () => loadAudit(false));
  $('#audit-more').addEventListener('click', () => loadAudit(true));
  $('#audit-csv').addEventListener('click', (e) => downloadCsv(e));
  window.addEventListener('hashchange', route);
  // Another tab signed in or out, or changed the lamps.
  window.addEventListener('storage', (e) => {
    if (e.key === 'ph.lamps') { S.lamps = store.get('lamps', []); if (S.view === 'lamps') loadLamps(); }
  });
}

async function boot() {
  wire();
  applyLanguage(pickLanguage());
  S.signinError = takeSigninError();
  if (S.token) route();
  // Who is signed in: the stored token's caller, or else whoever the session cookie (HttpOnly,
  // so only the hub can tell) belongs to; asked alongside the page's settings.
  const who = api('/api/me', { login: true }).then((me) => ({ me }), (e) => ({ e }));
  try {
    const ui = await fetch('/api/ui', { cache: 'no-store' }).then((r) => r.json());
    Object.assign(S.ui, ui);
    fmtCache.clear();
    document.title = S.ui.title;
    $('#title').textContent = S.ui.title;
    applyLanguage(pickLanguage());
  } catch { /* the stream's reconnect loop reports a hub that is down */ }
  const { me, e } = await who;
  if (e) {
    if (S.token && (e.status === 401 || e.status === 403)) { signOut(t('login.expired')); return; }
    if (!S.token) { showLogin(e.status === 0 ? t('login.down') : ''); return; }
  } else {
    S.me = me;
  }
  if (S.signinError) { toast(signinErrorText(S.signinError)); S.signinError = null; }
  await afterSignIn();
  // A colleague who opens the page with no view in mind lands on their own status.
  if (S.me?.role === 'self' && meId() && ['', '#', '#/'].includes(location.hash)) {
    history.replaceState(null, '', location.pathname + location.search + '#/me');
  }
  route();
}
boot();
})();
