#!/bin/sh
# Install Redmine (Debian package, SQLite) for the tickets tests, and prepare it:
# REST API on, project `ops`, assignable user `ops`, the admin's API key stored in
# $SAGA_REDMINE_KEY_FILE. Idempotent: a second run only re-checks (a few seconds).
# Needs root and the Debian archive. Usage: .ci/install-redmine.sh
set -eu

REDMINE_DIR=/usr/share/redmine
KEY_FILE=${SAGA_REDMINE_KEY_FILE:-/etc/redmine/default/saga-api-key}
export DEBIAN_FRONTEND=noninteractive
export RAILS_ENV=production X_DEBIAN_SITEID=default REDMINE_INSTANCE=default
started=$(date +%s)

# 0. Ruby and Debian's own bundler first. Debian's Ruby security update (libruby3.1
#    3.1.7-1~deb12u2) ships a newer bundler as Ruby's default gem, and that one cannot see
#    gems installed by Debian packages (`GemNotFound: racc-...`), so the redmine package's
#    own post-install `bundle install --local` fails. Debian's `ruby-bundler` works: every
#    bundle/rake/rails call below, and the package's scripts, run with BUNDLER_VERSION set
#    to whichever version of it this image has.
if ! dpkg-query -W -f='${Status}\n' ruby-bundler 2>/dev/null | grep -q 'ok installed'; then
  apt-get update -q
  apt-get install -y -q --no-install-recommends ruby ruby-bundler
fi
bundler_version=$(dpkg-query -W -f='${Version}' ruby-bundler)
bundler_version=${bundler_version#*:}   # epoch
bundler_version=${bundler_version%%-*}  # Debian revision
export BUNDLER_VERSION="$bundler_version"
echo "redmine: using Debian's bundler $BUNDLER_VERSION"

# 1. Packages, with dbconfig-common preseeded to create the SQLite database. A purged
#    redmine leaves templates of its per-instance questions behind without the questions,
#    and debconf-set-selections then refuses them ("Cannot find a question"): debconf's
#    own fix_db.pl drops such orphans first.
if [ -x /usr/share/debconf/fix_db.pl ]; then
  /usr/share/debconf/fix_db.pl
fi
# Likewise ucf remembers the config files of a purged or broken install: one that is gone
# from disk counts as "deleted by the admin" and is not written again, and then the
# package's post-install finds no database.yml. Forget those, so they are written anew.
if [ -f /var/lib/ucf/hashfile ]; then
  awk '{print $2}' /var/lib/ucf/hashfile \
    | grep -E '^/etc/(redmine|dbconfig-common/redmine)/' \
    | while read -r conf; do
        if [ ! -e "$conf" ]; then
          echo "redmine: ucf remembers missing $conf; forgetting it"
          ucf --purge "$conf"
          ucfr --purge redmine "$conf" 2>/dev/null || true
        fi
      done
fi
cat <<'SEL' | debconf-set-selections
redmine redmine/current-instances string default
redmine redmine/instances/default/dbconfig-install boolean true
redmine redmine/instances/default/database-type select sqlite3
redmine redmine/instances/default/db/dbname string redmine_default
redmine redmine/instances/default/db/basepath string /var/lib/dbconfig-common/sqlite3/redmine/instances/default
redmine redmine/instances/default/default-language select en
SEL
installed=$(dpkg-query -W -f='${Status}\n' redmine redmine-sqlite ruby-webrick 2>/dev/null \
  | grep -c 'ok installed' || true)
if [ "$installed" = 3 ]; then
  echo "redmine: packages already installed"
elif dpkg-query -W -f='${db:Status-Abbrev}\n' redmine 2>/dev/null | grep -q '^i[FU]'; then
  # A run that failed before this script set BUNDLER_VERSION leaves the package
  # unpacked but not configured (`iF`): configure it again with the right bundler.
  echo "redmine: package half-configured; configuring again"
  dpkg --configure -a
  apt-get install -y -q --no-install-recommends redmine-sqlite redmine ruby-webrick
else
  apt-get update -q
  apt-get install -y -q --no-install-recommends redmine-sqlite redmine ruby-webrick
fi

if [ ! -s /etc/redmine/default/database.yml ]; then
  echo "redmine: /etc/redmine/default/database.yml missing; reconfiguring" >&2
  dpkg-reconfigure -f noninteractive redmine
fi
test -s /etc/redmine/default/database.yml
# Wait for SQLite's write lock instead of failing at once (several test sessions, or
# WEBrick's threads, may write together); Rails sets no busy timeout by default.
if ! grep -q '^  timeout:' /etc/redmine/default/database.yml; then
  sed -i '/^  adapter: sqlite3/a\  timeout: 10000' /etc/redmine/default/database.yml
fi

# 2. WEBrick: Ruby 3 no longer bundles it, and `rails server` needs a server gem.
if ! grep -qs '^gem "webrick"' "$REDMINE_DIR/Gemfile.local"; then
  echo 'gem "webrick"' >> "$REDMINE_DIR/Gemfile.local"
  rm -f /var/lib/redmine/Gemfile.lock
fi
cd "$REDMINE_DIR"
if [ ! -s /var/lib/redmine/Gemfile.lock ]; then
  bundle install --local --quiet
  chown www-data:www-data /var/lib/redmine/Gemfile.lock
fi

# 3. Schema and default data (trackers, statuses, workflows, priorities).
rake db:migrate redmine:load_default_data REDMINE_LANG=en

# 4. REST API, project `ops`, an assignable user `ops`, the admin's API key.
ruby bin/rails runner - <<'RUBY' > "$KEY_FILE.tmp"
Setting.rest_api_enabled = "1"
admin = User.find_by!(login: "admin")
admin.update!(must_change_passwd: false)
project = Project.find_by(identifier: "ops") || Project.create!(
  name: "Ops", identifier: "ops", is_public: true, tracker_ids: Tracker.pluck(:id)
)
project.update!(tracker_ids: Tracker.pluck(:id)) if project.trackers.empty?
ops = User.find_by(login: "ops") || User.create!(
  login: "ops", firstname: "Ops", lastname: "Team", mail: "ops@example.invalid",
  password: SecureRandom.hex(16), status: User::STATUS_ACTIVE
) { |u| u.login = "ops" }
unless Member.exists?(project: project, user: ops)
  Member.create!(project: project, principal: ops, roles: [Role.find_by!(name: "Developer")])
end
puts admin.api_key
RUBY
mv "$KEY_FILE.tmp" "$KEY_FILE"
chmod 0640 "$KEY_FILE"
chown root:www-data "$KEY_FILE"
echo "redmine: ready in $(( $(date +%s) - started ))s; admin API key stored in $KEY_FILE"
